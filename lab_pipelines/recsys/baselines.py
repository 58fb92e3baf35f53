"""The baselines CMC is compared against: global mean + user/item biases, and surprise's SVD
(the biased matrix factorisation the recsys literature calls "SVD", Funk/Koren style)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from surprise import SVD, Dataset, Reader

from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import rmse


class _Predictor:
    """Shared predict/score for models of the form mu + b_u + b_i + p_u . q_i, clipped."""

    mu: float
    bu: np.ndarray
    bi: np.ndarray
    pu: np.ndarray  # (n_users, f); f = 0 for the bias baseline
    qi: np.ndarray
    scale: tuple[float, float]

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raw = (self.mu + self.bu[users] + self.bi[items]
               + np.einsum("nf,nf->n", self.pu[users], self.qi[items]))
        return np.clip(raw, *self.scale)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        # Unclipped so that items above the top of the scale still rank apart.
        scores = self.mu + self.bu[users, None] + self.bi[None, :] + self.pu[users] @ self.qi.T
        return torch.from_numpy(scores)

    def folded(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
               **knobs: float) -> _Predictor:
        """This model with the biases and factors of `users` refitted from the given ratings
        alone, every item's parameters fixed (a new user without retraining); `knobs` override
        the fit's own regularisation (see each model's `_fold_user`)."""
        out = copy.copy(self)
        out.bu, out.pu = self.bu.copy(), self.pu.copy()
        rows, local = np.unique(np.asarray(users), return_inverse=True)
        bu, pu = self._fold_user(local, len(rows), np.asarray(items),
                                 np.asarray(ratings, dtype=np.float64), **knobs)
        out.bu[rows], out.pu[rows] = bu, pu
        return out

    def _fold_user(self, local: np.ndarray, n: int, items: np.ndarray, ratings: np.ndarray,
                   **knobs: float) -> tuple[np.ndarray, np.ndarray]:
        """Bias and factors of n users from their ratings (`local`: which user, 0..n-1)."""
        raise NotImplementedError


class BiasBaseline(_Predictor):
    """r = mu + b_u + b_i, fitted by alternating regularised least squares."""

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, iterations: int = 10):
        self.reg_user, self.reg_item, self.iterations = reg_user, reg_item, iterations

    def fit(self, split: RatingSplit) -> BiasBaseline:
        users, items, ratings = split.arrays("train")
        ratings = ratings.astype(np.float64)
        self.mu = float(ratings.mean())
        self.bu, self.bi = np.zeros(split.n_users), np.zeros(split.n_items)
        n_u = np.bincount(users, minlength=split.n_users)
        n_i = np.bincount(items, minlength=split.n_items)
        for _ in range(self.iterations):
            resid = ratings - self.mu - self.bu[users]
            self.bi = np.bincount(items, resid, split.n_items) / (self.reg_item + n_i)
            resid = ratings - self.mu - self.bi[items]
            self.bu = np.bincount(users, resid, split.n_users) / (self.reg_user + n_u)
        self.pu, self.qi = np.zeros((split.n_users, 0)), np.zeros((split.n_items, 0))
        self.scale = (float(ratings.min()), float(ratings.max()))
        return self

    def _fold_user(self, local: np.ndarray, n: int, items: np.ndarray, ratings: np.ndarray,
                   reg_user: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        # The item means stay; the user's offset is the fit's own step: the mean residual
        # shrunk toward 0 by reg_user pseudo-ratings.
        reg = self.reg_user if reg_user is None else reg_user
        resid = np.bincount(local, ratings - self.mu - self.bi[items], n)
        return resid / (reg + np.bincount(local, minlength=n)), np.zeros((n, 0))


@dataclass(frozen=True)
class SVDParams:
    """surprise.SVD's knobs; the defaults are surprise's own."""

    n_factors: int = 100
    n_epochs: int = 20
    lr_all: float = 0.005
    reg_all: float = 0.02
    random_state: int = 0


# Found on the validation slice of ML-100K (random 80/20, seed 0); see docs/recsys.md.
SVD_TUNED = SVDParams(n_factors=200, n_epochs=40, lr_all=0.007, reg_all=0.08)
# What `tune_svd` searches on another dataset's validation slice: SVD_TUNED and its neighbours.
SVD_GRID = tuple(SVDParams(n_factors=f, n_epochs=40, lr_all=0.007, reg_all=r)
                 for f in (50, 200) for r in (0.04, 0.08, 0.12))


class SurpriseSVD(_Predictor):
    """surprise.SVD trained on our split; predictions are computed from its learned factors in
    bulk (identical to `algo.predict`, without a Python call per rating)."""

    def __init__(self, params: SVDParams = SVDParams()):
        self.params = params

    def fit(self, split: RatingSplit) -> SurpriseSVD:
        users, items, ratings = split.arrays("train")
        self.scale = (float(ratings.min()), float(ratings.max()))
        raw = list(zip(users.tolist(), items.tolist(), ratings.astype(float).tolist(),
                       [None] * len(users)))
        trainset = Dataset(Reader(rating_scale=self.scale)).construct_trainset(raw)
        algo = SVD(**vars(self.params))
        algo.fit(trainset)
        f = self.params.n_factors
        self.mu = float(trainset.global_mean)
        self.bu, self.bi = np.zeros(split.n_users), np.zeros(split.n_items)
        self.pu, self.qi = np.zeros((split.n_users, f)), np.zeros((split.n_items, f))
        # Users/items absent from train keep zero bias and factors, exactly as surprise does.
        known_u = np.fromiter(trainset._raw2inner_id_users.keys(), dtype=np.int64)
        inner_u = np.fromiter(trainset._raw2inner_id_users.values(), dtype=np.int64)
        known_i = np.fromiter(trainset._raw2inner_id_items.keys(), dtype=np.int64)
        inner_i = np.fromiter(trainset._raw2inner_id_items.values(), dtype=np.int64)
        self.bu[known_u], self.pu[known_u] = algo.bu[inner_u], algo.pu[inner_u]
        self.bi[known_i], self.qi[known_i] = algo.bi[inner_i], algo.qi[inner_i]
        return self

    def _fold_user(self, local: np.ndarray, n: int, items: np.ndarray, ratings: np.ndarray,
                   n_epochs: int | None = None, reg_all: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """surprise's own SGD (its learning rate, and its regularisation and epochs unless
        given, ratings in the order given) on the user's bias and vector only, from zero
        rather than surprise's random start so a fold-in is deterministic."""
        p = replace(self.params, **{k: v for k, v in (("n_epochs", n_epochs),
                                                      ("reg_all", reg_all)) if v is not None})
        bu, pu = np.zeros(n), np.zeros((n, self.qi.shape[1]))
        # The j-th rating of every user at once: users are independent once items are fixed.
        order = np.argsort(local, kind="stable")
        position = np.empty(len(local), dtype=np.int64)
        starts = np.searchsorted(local[order], np.arange(n))
        position[order] = np.arange(len(local)) - np.repeat(starts, np.bincount(local, minlength=n))
        rounds = [np.flatnonzero(position == j) for j in range(int(position.max(initial=-1)) + 1)]
        for _ in range(p.n_epochs):
            for at in rounds:
                u, i = local[at], items[at]
                err = ratings[at] - (self.mu + bu[u] + self.bi[i]
                                     + np.einsum("nf,nf->n", pu[u], self.qi[i]))
                bu[u] += p.lr_all * (err - p.reg_all * bu[u])
                pu[u] += p.lr_all * (err[:, None] * self.qi[i] - p.reg_all * pu[u])
        return bu, pu


def tune_svd(split: RatingSplit, grid: tuple[SVDParams, ...] = SVD_GRID
             ) -> tuple[SVDParams, list[dict]]:
    """The grid point with the lowest validation RMSE, and every point's validation RMSE."""
    val_u, val_i, val_r = split.arrays("val")
    table = []
    for params in grid:
        pred = SurpriseSVD(params).fit(split).predict(val_u, val_i)
        table.append({**vars(params), "val_rmse": rmse(pred, val_r)})
    best = min(table, key=lambda r: r["val_rmse"])
    return SVDParams(**{k: v for k, v in best.items() if k != "val_rmse"}), table
