"""Built-in chatapi plugin for WhatsChat Gateway."""
