"""Top-k ranking scores beyond the raw predicted rating, chosen on validation only.

CMC's expected-rating ranking draws its top 10 from well-liked, much-rated items: on ML-100K
the median recommended item has ~176 training ratings and only ~14% of recommendations fall
outside the 20% most-rated items, against ~31% for tuned SVD, whose extreme predictions on
rarely rated items fill its lists. Two discounts move a list toward the tail:

  popularity  score - beta * log(1 + the item's training ratings): a standard re-ranking.
  appeal      score - gamma * the item's mean score over all users: ranks by how much more
              this user is predicted to like the item than users at large, so an item the
              model likes for everyone stops filling every list. It uses only the model.

Each is tried on the expected rating and on the head's P(rating >= 4); the choice keeps the
validation Recall@10 and NDCG@10 at least a floor (the baselines') and widens coverage most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import RatingModel, validation_ranking

BETAS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
GAMMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class ItemDiscount:
    """A rating model whose ranking score is lowered by a fixed amount per item; its rating
    predictions are the wrapped model's, unchanged."""

    def __init__(self, model: RatingModel, penalty: torch.Tensor):
        self.model, self.penalty = model, penalty

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.predict(users, items)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        scores = self.model.score_users(users)
        return scores - self.penalty.to(scores.device, scores.dtype)


def popularity(split: RatingSplit) -> torch.Tensor:
    """log(1 + training ratings) per item."""
    counts = np.bincount(split.arrays("train")[1], minlength=split.n_items)
    return torch.from_numpy(np.log1p(counts.astype(np.float64)))


def appeal(model: RatingModel, n_users: int, batch: int = 1024) -> torch.Tensor:
    """Each item's mean score over all users, in user batches."""
    total = None
    for start in range(0, n_users, batch):
        part = model.score_users(np.arange(start, min(start + batch, n_users))).double().sum(0)
        total = part if total is None else total + part
    return (total / n_users).cpu()


def candidates(scores: dict[str, RatingModel], split: RatingSplit) -> dict[str, RatingModel]:
    """Every score as is, with each popularity beta and with each appeal gamma."""
    pop = popularity(split)
    out: dict[str, RatingModel] = {}
    for name, model in scores.items():
        out[name] = model
        out.update({f"{name}-popularity{b}": ItemDiscount(model, b * pop) for b in BETAS})
        mean = appeal(model, split.n_users)
        out.update({f"{name}-appeal{g}": ItemDiscount(model, g * mean) for g in GAMMAS})
    return out


@dataclass
class RankingChoice:
    name: str
    model: RatingModel
    table: list[dict]  # one row per candidate: validation recall, NDCG, coverage, long tail


def choose_ranking(options: dict[str, RatingModel], split: RatingSplit,
                   floor: dict[str, float]) -> RankingChoice:
    """The candidate with the widest validation coverage among those whose validation metrics
    stay at least `floor` (e.g. {"recall_at_10": the best baseline's}); the first candidate
    when none does."""
    table = [{"ranking": name, **validation_ranking(m, split)} for name, m in options.items()]
    fine = [r for r in table if all(r[k] >= v for k, v in floor.items())] or table[:1]
    best = max(fine, key=lambda r: (r["catalog_coverage"], r["long_tail_share"]))
    return RankingChoice(best["ranking"], options[best["ranking"]], table)
