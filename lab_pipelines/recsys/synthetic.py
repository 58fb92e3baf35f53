"""A small synthetic low-rank rating matrix, for tests and smoke runs: users and items with
latent factors and biases, ratings rounded to 1..5 stars, observed at random."""

from __future__ import annotations

import numpy as np
import polars as pl


def synthetic_ratings(n_users: int = 150, n_items: int = 120, rank: int = 3,
                      density: float = 0.25, noise: float = 0.3, seed: int = 0) -> pl.DataFrame:
    """Ratings in the loaders' format (`user_id`, `item_id`, `rating`, `timestamp`)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank))
    items = rng.normal(size=(n_items, rank))
    signal = (users @ items.T) / np.sqrt(rank) + rng.normal(0, 0.5, (n_users, 1)) \
        + rng.normal(0, 0.5, (1, n_items))
    observed = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(observed)
    stars = np.clip(np.rint(3.0 + signal[u, i] + rng.normal(0, noise, len(u))), 1, 5)
    return pl.DataFrame({"user_id": u.astype(str), "item_id": i.astype(str),
                         "rating": stars.astype(np.float64),
                         "timestamp": rng.integers(800_000_000, 900_000_000, len(u))})


def write_u_data(frame: pl.DataFrame, path) -> None:
    """Write ratings in GroupLens `u.data` layout (tab-separated, no header)."""
    frame.select(pl.all().cast(pl.Utf8)).write_csv(path, separator="\t", include_header=False)
