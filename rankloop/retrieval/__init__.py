"""rankloop.retrieval."""
