"""The user's own documents for grounded chat: extraction, passages, the BM25/dense index, citations."""
