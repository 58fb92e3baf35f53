"""A seed ensemble of CMC: models that differ only in their model seed (initial weights,
dropout masks, InfoNCE samples), trained on the same split, whose expected ratings are
averaged. How many members to keep is chosen on validation RMSE.

Under squared error the mean of several predictions is never worse than the members' mean
error (Jensen), and it gains where the members disagree: on ML-100K seed 0 three members
took validation RMSE from 0.8809 to 0.8780. Members 1.. cost a full training each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lab_pipelines.progress import LogFn
from lab_pipelines.recsys.cmc import CMCConfig, CMCPredictor
from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.train import train_cmc

# Three members: the third still paid on ML-100K (0.8794 -> 0.8780 on validation), and each
# costs about a minute on one core, which is what the demo can spend.
MAX_MODELS = 3


class SeedEnsemble:
    """The mean expected rating of several CMC predictors; a `metrics.RatingModel`, so it
    is evaluated and ranked (by the mean expected rating) like one model."""

    def __init__(self, members: Sequence[CMCPredictor]):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        # Averaging P(r >= 4) with expected ratings would mix scales.
        if any(m.ranking != "expected" for m in members):
            raise ValueError("ensemble members must rank by the expected rating")
        self.members = list(members)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(users, items) for m in self.members], axis=0)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        # A running sum: one (users x items) block per member at a time, not all of them.
        total = self.members[0].score_users(users)
        for member in self.members[1:]:
            total = total + member.score_users(users)
        return total / len(self.members)


@dataclass
class Member:
    """One trained member and what its training cost."""

    seed: int
    predictor: CMCPredictor
    train_seconds: float
    best_epoch: int


@dataclass
class EnsembleResult:
    members: list[Member]  # every member trained, in seed order
    sizes: list[dict]  # per ensemble size: validation RMSE and its excess over the best
    n_models: int  # the size chosen on validation

    @property
    def model(self) -> SeedEnsemble:
        """The chosen ensemble: the first `n_models` members."""
        return SeedEnsemble([m.predictor for m in self.members[: self.n_models]])

    @property
    def train_seconds(self) -> float:
        """Training time of the chosen members, added up (they train one after another)."""
        return sum(m.train_seconds for m in self.members[: self.n_models])


def member_config(cfg: CMCConfig, k: int) -> CMCConfig:
    """Member k's knobs: the base config's, with the model seed moved on by k."""
    return replace(cfg, seed=cfg.seed + k)


def choose_size(predictions: Sequence[np.ndarray], ratings: np.ndarray) -> tuple[int, list[dict]]:
    """The smallest ensemble (the first n members) whose validation mean squared error is
    within one standard error of the best size's, and a row per size. The standard error is
    that of the mean per-rating difference in squared error against the best size (paired:
    the same ratings score both), so "within noise" is measured, not a fixed tolerance; a
    member that does not clearly pay is not worth its training."""
    squared = [(np.mean(predictions[:n], axis=0) - ratings) ** 2
               for n in range(1, len(predictions) + 1)]
    best = int(np.argmin([s.mean() for s in squared]))
    rows = []
    for n, errors in enumerate(squared, start=1):
        excess = errors - squared[best]
        rows.append({"n_models": n, "val_rmse": float(np.sqrt(errors.mean())),
                     "val_mse_excess": float(excess.mean()),
                     "val_mse_excess_se": float(excess.std(ddof=1) / np.sqrt(len(excess)))})
    chosen = next(r["n_models"] for r in rows
                  if r["val_mse_excess"] <= r["val_mse_excess_se"])
    return chosen, rows


def train_seed_ensemble(split: RatingSplit, cfg: CMCConfig, max_models: int = MAX_MODELS,
                        device: str = "auto", members: Sequence[Member] = (),
                        checkpoint_for: Callable[[int], Path] | None = None,
                        log: LogFn | None = None) -> EnsembleResult:
    """Members 0 .. max_models - 1 with seeds cfg.seed + k, trained by `train_cmc` (a
    checkpoint per member at `checkpoint_for(seed)` when given), and the ensemble size chosen
    on validation RMSE. `members` are ones already trained, in seed order from cfg.seed (the
    demo's `cmc_model`): only the rest are trained. They must have been trained with the same
    knobs, or the ensemble would not be one of seeds alone."""
    if max_models < 1:
        raise ValueError(f"max_models must be at least 1, not {max_models}")
    members = list(members)[:max_models]
    for k, member in enumerate(members):
        if member.predictor.model.cfg != member_config(cfg, k):
            raise ValueError(f"member {k} was trained with other knobs than "
                             f"{member_config(cfg, k)}: {member.predictor.model.cfg}")
    say = log or print
    for k in range(len(members), max_models):
        member_cfg = member_config(cfg, k)
        checkpoint = checkpoint_for(member_cfg.seed) if checkpoint_for else None
        predictor, result = train_cmc(split, member_cfg, device, checkpoint, log=log)
        say(f"ensemble member {k} (seed {member_cfg.seed}): validation RMSE "
            f"{result.best_val_rmse:.4f} @ epoch {result.best_epoch}, "
            f"{result.train_seconds:.0f} s")
        members.append(Member(member_cfg.seed, predictor, result.train_seconds,
                              result.best_epoch))
    val_u, val_i, val_r = split.arrays("val")
    n_models, sizes = choose_size([m.predictor.predict(val_u, val_i) for m in members], val_r)
    say(f"ensemble size {n_models} of {len(members)} chosen on validation: " + ", ".join(
        f"{r['n_models']}: {r['val_rmse']:.4f}" for r in sizes))
    return EnsembleResult(members, sizes, n_models)
