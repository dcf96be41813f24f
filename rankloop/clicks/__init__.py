"""rankloop.clicks."""
