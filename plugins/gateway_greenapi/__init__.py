"""Built-in greenapi plugin for WhatsChat Gateway."""
