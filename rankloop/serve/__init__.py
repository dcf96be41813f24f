"""A live search-and-recommend service: `rankloop serve` (FastAPI + uvicorn), its web page, the
durable SQLite click log (`store`), micro-batched pipelines (`engine`) and an online learner."""
