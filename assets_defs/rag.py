"""RAG ingestion assets (being written)."""
