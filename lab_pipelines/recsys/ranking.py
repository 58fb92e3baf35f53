"""Top-k ranking beyond the raw predicted rating, chosen on validation only.

CMC's expected-rating ranking draws its top 10 from well-liked, much-rated items: on ML-100K
the median recommended item has ~176 training ratings and only ~14% of recommendations fall
outside the 20% most-rated items, against ~31% for tuned SVD, whose extreme predictions on
rarely rated items fill its lists. Three levers move a list toward the tail:

  popularity  score - beta * log(1 + the item's training ratings): a standard re-ranking.
  appeal      score - gamma * the item's mean score over all users: ranks by how much more
              this user is predicted to like the item than users at large, so an item the
              model likes for everyone stops filling every list. It uses only the model.
  tail quota  at least q of the 10 slots go to long-tail items (outside the 20% most rated):
              the user's own best-scored ones, swapped in for the lowest-ranked head items
              and ranked after the rest. The discounts shift every item's score; the quota
              only touches the bottom of a list, so the items the user is likeliest to rate
              highly keep their places.

Each score (the expected rating, the head's P(rating >= 4)) is tried with every combination
of the three on a grid. The choice is made on validation only: the candidate whose Recall@10,
NDCG@10, coverage and long-tail share lead the baselines' by the most standard errors at
their weakest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import RatingModel, head_items, validation_ranking_of

# Popularity betas reach down to 0.0025 because P(r >= 4) spans [0, 1], a fifth of the
# expected rating's range: 0.01 already costs it a fifth of its validation recall on ML-1M.
BETAS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
GAMMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
QUOTAS = (1, 2, 3, 4)  # long-tail slots guaranteed in a top-10 list
# The validation figures a ranking must beat the baselines on (the Pareto gain).
BARS = ("recall_at_10", "ndcg_at_10", "catalog_coverage", "long_tail_share")


def at_least_tail(scores: torch.Tensor, tail: torch.Tensor, quota: int, k: int = 10
                  ) -> torch.Tensor:
    """Scores whose k best are `scores`' k best with their lowest-ranked head items swapped
    for the best tail items below them, until `quota` of the k are tail items or the user's
    unseen tail items run out. Kept items keep their order and rank first; swapped-in ones
    follow in theirs. `scores` must be -inf on seen items; the result is -inf off the list."""
    inf = float("-inf")
    top, at = scores.topk(k, dim=1)
    in_tail = tail[at]
    below = scores.masked_fill(~tail, inf).scatter(1, at, inf)
    best, best_at = below.topk(quota, dim=1)
    short = torch.minimum((quota - in_tail.sum(1, keepdim=True)).clamp(min=0),
                          best.isfinite().sum(1, keepdim=True))
    head_at_or_below = (~in_tail).flip(1).cumsum(1).flip(1)
    leave = ~in_tail & (head_at_or_below <= short)
    # New scores are ranks: kept items get 2k..k+1 by position, joined items k, k-1, ...
    out = torch.full_like(scores, inf)
    kept = torch.arange(2 * k, k, -1, dtype=scores.dtype).expand_as(top)
    out.scatter_(1, at, torch.where(leave | ~top.isfinite(), inf, kept))
    order = torch.arange(quota)
    joined = torch.where(order[None, :] < short, (k - order).to(scores.dtype), inf)
    # A `best_at` entry past the unseen tail items may fall inside the list: keep its rank.
    return out.scatter_(1, best_at, torch.maximum(out.gather(1, best_at), joined))


class Ranking:
    """A rating model's top-k lists ranked by its score minus a fixed amount per item, then
    with at least `quota` long-tail items per list; its rating predictions are the wrapped
    model's, unchanged."""

    def __init__(self, model: RatingModel, penalty: torch.Tensor, tail: torch.Tensor,
                 quota: int = 0, k: int = 10):
        self.model, self.penalty, self.tail, self.quota, self.k = model, penalty, tail, quota, k

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.predict(users, items)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        """The discounted score, before the quota (which needs to know what users saw)."""
        return self.discount(self.model.score_users(users))

    def rank_users(self, users: np.ndarray, seen: torch.Tensor) -> torch.Tensor:
        return self.arrange(self.score_users(users), seen)

    def discount(self, scores: torch.Tensor) -> torch.Tensor:
        return scores - self.penalty.to(scores.device, scores.dtype)

    def arrange(self, scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Discounted scores of a batch of users -> scores whose k best unseen items are the
        list. Only the quota needs seen items masked here; the top-k masks them anyway."""
        if not self.quota:
            return scores
        unseen = scores.float().cpu().masked_fill(seen, float("-inf"))
        return at_least_tail(unseen, self.tail, self.quota, self.k)


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


def tail_items(split: RatingSplit) -> torch.Tensor:
    """Items outside the 20% most rated in train: the long tail the metrics count."""
    return torch.from_numpy(~head_items(split.arrays("train")[1], split.n_items))


def candidates(scores: dict[str, RatingModel], split: RatingSplit) -> dict[str, Ranking]:
    """Every score minus gamma x appeal and minus beta x popularity, with every tail quota,
    for every combination on the grids (0 included): the appeal discount widens coverage, the
    popularity one and the quota move the lists toward the tail."""
    pop, tail = popularity(split), tail_items(split)
    out: dict[str, Ranking] = {}
    for name, model in scores.items():
        mean = appeal(model, split.n_users)
        for g in (0.0, *GAMMAS):
            for b in (0.0, *BETAS):
                for q in (0, *QUOTAS):
                    label = (name + (f"-appeal{g}" if g else "") + (f"-popularity{b}" if b else "")
                             + (f"-tail{q}" if q else ""))
                    out[label] = Ranking(model, g * mean + b * pop, tail, q)
    return out


def validation_table(options: dict[str, Ranking], split: RatingSplit) -> list[dict]:
    """Validation Recall@10, NDCG@10, coverage and long tail of every candidate, with their
    standard errors, in one pass over the users: each base score is computed once per user
    batch and every candidate's discount and quota applied to it, instead of re-scoring the
    users once per candidate."""
    by_base: dict[int, list[tuple[str, Ranking]]] = {}
    for name, option in options.items():
        by_base.setdefault(id(option.model), []).append((name, option))

    def scores(rows: np.ndarray, seen: torch.Tensor):
        for group in by_base.values():
            base = group[0][1].model.score_users(rows)
            yield from ((name, o.arrange(o.discount(base), seen)) for name, o in group)

    got = validation_ranking_of(scores, split, errors=True)
    return [{"ranking": name, **got[name]} for name in options]


def margin(row: dict, bars: dict[str, float]) -> float:
    """A candidate's smallest lead over the bars, in standard errors of the difference
    (sqrt(2) x its own, taking the bar's as large): above 0 it beats every one. Standard
    errors, not relative leads, because the figures are not equally noisy: on ML-1M
    validation Recall@10's error is 3% of its value and the long tail's 0.4%, so a 5% lead
    is a coin toss on recall and certain on the long tail."""
    return min((row[m] - v) / (2 ** 0.5 * max(row[f"{m}_se"], 1e-12)) for m, v in bars.items())


@dataclass
class RankingChoice:
    name: str
    model: Ranking
    table: list[dict]  # one row per candidate: validation recall, NDCG, coverage, long tail,
    # their standard errors, and its margin over the bars


def choose_ranking(options: dict[str, Ranking], split: RatingSplit,
                   bars: dict[str, float]) -> RankingChoice:
    """The candidate whose validation figures lead the bars (e.g. every baseline's best
    validation Recall@10, NDCG@10, coverage and long tail) by the most standard errors at its
    weakest: a Pareto gain on validation when that margin is positive, the nearest to one
    otherwise. Leading every bar by the most, rather than just clearing them, leaves room for
    the noise between validation and test."""
    table = [{**r, "margin": margin(r, bars)} for r in validation_table(options, split)]
    best = max(table, key=lambda r: r["margin"])
    return RankingChoice(best["ranking"], options[best["ranking"]], table)
