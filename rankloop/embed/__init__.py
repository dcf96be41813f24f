"""rankloop.embed."""
