"""rankloop.recsys."""
