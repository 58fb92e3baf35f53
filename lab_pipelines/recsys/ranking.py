"""Top-k ranking scores beyond the raw predicted rating, chosen on validation only.

CMC's expected-rating ranking draws its top 10 from well-liked, much-rated items (on ML-100K
the median recommended item has ~176 training ratings; only ~14% of recommendations fall
outside the 20% most-rated items, against ~31% for tuned SVD, whose extreme predictions on
rarely rated items fill its lists). A popularity discount subtracts beta * log(1 + n_ratings)
of the item from the score: a standard re-ranking that trades a little of the head for the
tail. beta is picked on the validation slice, never on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import RatingModel, validation_ranking

BETAS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2)


class PopularityDiscount:
    """A rating model whose ranking score is lowered by beta * log1p(item's training count);
    its rating predictions are the wrapped model's, unchanged."""

    def __init__(self, model: RatingModel, item_counts: np.ndarray, beta: float):
        self.model, self.beta = model, beta
        self.penalty = torch.from_numpy(beta * np.log1p(item_counts.astype(np.float64)))

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.predict(users, items)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        scores = self.model.score_users(users)
        return scores - self.penalty.to(scores.device, scores.dtype)


@dataclass
class RankingChoice:
    beta: float
    model: PopularityDiscount
    table: list[dict]  # one row per beta: validation recall, NDCG, coverage, long-tail share


def choose_discount(model: RatingModel, split: RatingSplit, floor: dict[str, float],
                    betas: Sequence[float] = BETAS) -> RankingChoice:
    """The beta with the widest validation coverage among those whose validation metrics stay
    at least `floor` (e.g. {"recall_at_10": the best baseline's, ...}); no discount when no
    beta keeps the floor."""
    counts = np.bincount(split.arrays("train")[1], minlength=split.n_items)
    candidates = {b: PopularityDiscount(model, counts, b) for b in sorted({0.0, *betas})}
    table = [{"beta": b, **validation_ranking(m, split)} for b, m in candidates.items()]
    fine = [r for r in table if all(r[k] >= v for k, v in floor.items())] or table[:1]
    best = max(fine, key=lambda r: (r["catalog_coverage"], r["long_tail_share"]))
    return RankingChoice(best["beta"], candidates[best["beta"]], table)
