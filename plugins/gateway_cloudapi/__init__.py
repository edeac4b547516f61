"""Built-in cloudapi plugin for WhatsChat Gateway."""
