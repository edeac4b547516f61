"""WhatsChat Gateway core."""
