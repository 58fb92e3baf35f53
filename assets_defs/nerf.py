"""nerf assets (being written)."""
