"""rankloop.rerank."""
