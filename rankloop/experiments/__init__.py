"""rankloop.experiments."""
