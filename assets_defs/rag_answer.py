"""RAG answering assets (being written)."""
