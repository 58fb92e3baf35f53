"""All recsys metrics in one place: rating error, top-k ranking quality, catalog coverage.

Ranking protocol: for every user, score all items they have not rated in train or validation,
take the top k; an item is relevant when the user rated it >= 4 in test. Recall@k is
hits / |relevant| averaged over users with at least one relevant item; NDCG@k uses binary
gains; catalog coverage is the share of the catalog that appears in any user's top k; the
long-tail share is the share of all top-k slots filled by items outside the 20% most rated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from lab_pipelines.devices import release_free_heap
from lab_pipelines.recsys.data import RatingSplit


class RatingModel(Protocol):
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for (user, item) pairs."""

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        """Predicted ratings of every item for each user: shape (len(users), n_items)."""


@runtime_checkable
class ListRanking(RatingModel, Protocol):
    """A rating model whose top-k lists are not just its k best scores (ranking.py's tail
    quota): it needs to know which items each user has already seen."""

    def rank_users(self, users: np.ndarray, seen: torch.Tensor) -> torch.Tensor:
        """Scores whose k best unseen items are the list: shape (len(users), n_items)."""


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - target) ** 2)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - target)))


def _dense_rows(users: np.ndarray, items: np.ndarray, rows: np.ndarray, n_items: int
                ) -> torch.Tensor:
    """A (len(rows), n_items) boolean mask with True at each (user, item) whose user is in rows."""
    position = np.full(max(int(users.max(initial=0)), int(rows.max(initial=0))) + 1, -1)
    position[rows] = np.arange(len(rows))
    keep = position[users] >= 0
    mask = torch.zeros(len(rows), n_items, dtype=torch.bool)
    mask[torch.from_numpy(position[users[keep]]), torch.from_numpy(items[keep].astype(np.int64))
         ] = True
    return mask


# Scores for one batch of users (rows, and the (len(rows), n_items) mask of what they have
# seen), as (name, scores) pairs. A generator, so many score variants of one base score
# (ranking.py) are held one at a time.
BatchScores = Callable[[np.ndarray, torch.Tensor], Iterable[tuple[str, torch.Tensor]]]


def _top_k_batches(scores: BatchScores, seen: tuple[np.ndarray, np.ndarray], n_users: int,
                   n_items: int, k: int, batch: int
                   ) -> Iterator[tuple[np.ndarray, Iterator[tuple[str, torch.Tensor]]]]:
    """(user rows, (score name, their top-k unseen items) per score) per batch: only
    batch x n_items scores are ever held, so memory stays bounded however many users there
    are."""
    seen_u, seen_i = seen
    for start in range(0, n_users, batch):
        rows = np.arange(start, min(start + batch, n_users))
        mask = _dense_rows(seen_u, seen_i, rows, n_items)
        yield rows, ((name, block.float().cpu().masked_fill(mask, float("-inf")).topk(
            k, dim=1).indices) for name, block in scores(rows, mask))


def _one(model: RatingModel) -> BatchScores:
    if isinstance(model, ListRanking):
        return lambda rows, seen: [("", model.rank_users(rows, seen))]
    return lambda rows, seen: [("", model.score_users(rows))]


def top_k(model: RatingModel, seen: tuple[np.ndarray, np.ndarray], n_users: int, n_items: int,
          k: int = 10, batch: int = 1024) -> np.ndarray:
    """Every user's k best-scored items among those not in `seen`: (n_users, k)."""
    return torch.cat([top for _, tops in _top_k_batches(_one(model), seen, n_users, n_items,
                                                        k, batch) for _, top in tops]).numpy()


def head_items(items: np.ndarray, n_items: int, share: float = 0.2) -> np.ndarray:
    """Boolean mask of the `share` most-rated items (the blockbusters), by rating count."""
    counts = np.bincount(items, minlength=n_items)
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-counts, kind="stable")[: round(share * n_items)]] = True
    return head


class _Tally:
    """One score's running Recall@k, NDCG@k, recommendation counts over user batches."""

    def __init__(self, n_items: int, k: int):
        self.k, self.recalls, self.ndcgs = k, [], []
        self.recommended = torch.zeros(n_items, dtype=torch.long)
        self.discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)

    def add(self, top: torch.Tensor, relevant: torch.Tensor) -> None:
        self.recommended += torch.bincount(top.flatten(), minlength=len(self.recommended))
        n_rel = relevant.sum(1)
        hits = relevant.gather(1, top).double()
        has = n_rel > 0
        self.recalls.append((hits.sum(1) / n_rel.clamp(min=1))[has])
        ideal = torch.cumsum(self.discounts, 0)[(n_rel.clamp(1, self.k) - 1)]
        self.ndcgs.append(((hits * self.discounts).sum(1) / ideal)[has])

    def result(self, head: np.ndarray | None, errors: bool = False) -> dict[str, float]:
        """The figures; with `errors`, each one's standard error too (`<figure>_se`)."""
        recall, ndcg, k = torch.cat(self.recalls), torch.cat(self.ndcgs), self.k
        out = {f"recall_at_{k}": float(recall.mean()) if len(recall) else 0.0,
               f"ndcg_at_{k}": float(ndcg.mean()) if len(ndcg) else 0.0,
               "catalog_coverage": float((self.recommended > 0).float().mean())}
        if head is not None:
            tail = self.recommended[torch.from_numpy(~head)].sum()
            out["long_tail_share"] = float(tail / self.recommended.sum())
        if errors:
            # Recall and NDCG are means over users; coverage a share of the items and the long
            # tail a share of the slots, so a binomial proportion's error.
            for name, per_user in ((f"recall_at_{k}", recall), (f"ndcg_at_{k}", ndcg)):
                out[f"{name}_se"] = float(per_user.std() / len(per_user) ** 0.5
                                          ) if len(per_user) > 1 else 0.0
            shares = {"catalog_coverage": len(self.recommended)}
            if head is not None:
                shares["long_tail_share"] = int(self.recommended.sum())
            for name, n in shares.items():
                out[f"{name}_se"] = (out[name] * (1.0 - out[name]) / max(n, 1)) ** 0.5
        return out


def ranking_metrics_of(scores: BatchScores, seen: tuple[np.ndarray, np.ndarray],
                       test: tuple[np.ndarray, np.ndarray, np.ndarray], n_users: int,
                       n_items: int, k: int = 10, relevant_at: float = 4.0, batch: int = 1024,
                       head: np.ndarray | None = None, errors: bool = False
                       ) -> dict[str, dict[str, float]]:
    """`ranking_metrics` of every score `scores` yields, in one pass over the user batches;
    with `errors`, each figure's standard error too."""
    test_u, test_i, test_r = test
    rel_u, rel_i = test_u[test_r >= relevant_at], test_i[test_r >= relevant_at]
    tallies: dict[str, _Tally] = {}
    for rows, tops in _top_k_batches(scores, seen, n_users, n_items, k, batch):
        relevant = _dense_rows(rel_u, rel_i, rows, n_items)
        for i, (name, top) in enumerate(tops):
            tallies.setdefault(name, _Tally(n_items, k)).add(top, relevant)
            if i % 16 == 15:
                release_free_heap()
    return {name: tally.result(head, errors) for name, tally in tallies.items()}


def ranking_metrics(model: RatingModel, seen: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray, np.ndarray], n_users: int, n_items: int,
                    k: int = 10, relevant_at: float = 4.0, batch: int = 1024,
                    head: np.ndarray | None = None) -> dict[str, float]:
    """Recall@k, NDCG@k, catalog coverage and, given the head items, the long-tail share (the
    share of all recommendations outside the head), over all users in batches."""
    return ranking_metrics_of(_one(model), seen, test, n_users, n_items, k, relevant_at, batch,
                              head)[""]


def evaluate(model: RatingModel, split: RatingSplit, k: int = 10) -> dict[str, float]:
    """Test RMSE/MAE plus ranking metrics, excluding items rated in train and validation; the
    head (top 20% most-rated items) is counted on train."""
    users, items, ratings = split.arrays("test")
    pred = model.predict(users, items)
    train_u, train_i, _ = split.arrays("train")
    seen = [np.concatenate(parts) for parts in zip((train_u, train_i), split.arrays("val")[:2])]
    return {"rmse": rmse(pred, ratings), "mae": mae(pred, ratings),
            **ranking_metrics(model, (seen[0], seen[1]), (users, items, ratings),
                              split.n_users, split.n_items, k=k,
                              head=head_items(train_i, split.n_items))}


def validation_ranking_of(scores: BatchScores, split: RatingSplit, k: int = 10,
                          errors: bool = False) -> dict[str, dict[str, float]]:
    """Ranking metrics with validation as the held-out set and train as seen, for every score
    `scores` yields: what a ranking choice may be selected on without looking at test."""
    train_u, train_i, _ = split.arrays("train")
    return ranking_metrics_of(scores, (train_u, train_i), split.arrays("val"), split.n_users,
                              split.n_items, k=k, head=head_items(train_i, split.n_items),
                              errors=errors)


def validation_ranking(model: RatingModel, split: RatingSplit, k: int = 10) -> dict[str, float]:
    """`validation_ranking_of` for one model."""
    return validation_ranking_of(_one(model), split, k)[""]
