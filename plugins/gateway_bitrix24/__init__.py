"""Built-in bitrix24 plugin for WhatsChat Gateway."""
