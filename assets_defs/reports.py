"""reports assets (being written)."""
