"""Metrics against values computed by hand on a toy case."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import evaluate, mae, rmse


class FixedScores:
    """A rating model whose predictions are a given matrix."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores

    def predict(self, users, items):
        return self.scores[users, items]

    def score_users(self, users):
        return torch.from_numpy(self.scores[users])


def _frame(rows):
    return pl.DataFrame(rows, schema={"user": pl.Int32, "item": pl.Int32, "rating": pl.Float32},
                        orient="row")


def test_rmse_and_mae_by_hand():
    assert rmse(np.array([3.0, 5.0]), np.array([4.0, 2.0])) == pytest.approx(math.sqrt(5))
    assert mae(np.array([3.0, 5.0]), np.array([4.0, 2.0])) == pytest.approx(2.0)


def test_ranking_metrics_by_hand():
    # 3 users x 12 items. Item scores fall with the item index, so every user's top 10 is the
    # first 10 items they have not rated.
    scores = np.tile(np.linspace(5, 1, 12), (3, 1))
    split = RatingSplit(
        train=_frame([(0, 0, 5.0), (1, 1, 4.0), (2, 1, 3.0)]),
        val=_frame([(0, 1, 3.0)]),
        # user 0: top 10 = items 2..11; relevant {2 (5 stars), 11 (4 stars)}; item 3 has 2 stars.
        # user 1: top 10 = items 0, 2..10; relevant {10}. user 2: nothing relevant.
        test=_frame([(0, 2, 5.0), (0, 11, 4.0), (0, 3, 2.0), (1, 10, 4.0), (2, 5, 3.0)]),
        n_users=3, n_items=12, dataset="toy", split="toy")
    got = evaluate(FixedScores(scores), split, k=10)
    assert got["recall_at_10"] == pytest.approx((1.0 + 1.0) / 2)
    dcg0, idcg0 = 1 / math.log2(2) + 1 / math.log2(11), 1 / math.log2(2) + 1 / math.log2(3)
    dcg1 = 1 / math.log2(11)  # item 10 is user 1's 10th pick: items 0, 2, 3, ..., 10
    assert got["ndcg_at_10"] == pytest.approx((dcg0 / idcg0 + dcg1 / 1.0) / 2)
    # Top-10 lists: user 0 {2..11}, users 1 and 2 {0, 2..10}; item 1, rated by all, is never shown.
    assert got["catalog_coverage"] == pytest.approx(11 / 12)
    test_pred = scores[[0, 0, 0, 1, 2], [2, 11, 3, 10, 5]]
    errors = test_pred - np.array([5.0, 4.0, 2.0, 4.0, 3.0])
    assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors ** 2))))
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(errors))))
