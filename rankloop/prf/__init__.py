"""rankloop.prf."""
