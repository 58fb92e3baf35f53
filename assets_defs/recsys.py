"""recsys assets (being written)."""
