"""Re-ranking: learning to rank and click-debiased (unbiased) learning to rank in `rerank.ltr`."""
