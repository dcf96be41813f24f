"""rankloop.eval."""
