"""rankloop.rerank.ltr."""
