"""The InfoNCE temperature sweep: train CMC once per tau, compare validation RMSE only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lab_pipelines.progress import LogFn, track
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.train import train_cmc

TAUS = (0.05, 0.07, 0.1, 0.2, 0.5)


def temperature_sweep(split: RatingSplit, base: CMCConfig, taus: Sequence[float] = TAUS,
                      device: str = "auto", log: LogFn | None = None) -> list[dict]:
    """One row per tau: best validation RMSE, the epoch it was reached, training seconds.
    Progress over taus, and each training's, goes to `log` (tqdm bars without one)."""
    rows = []
    for tau in track(taus, "tau sweep", log, unit="taus"):
        _, result = train_cmc(split, replace(base, tau=tau), device, log=log)
        rows.append({"tau": tau, "val_rmse": result.best_val_rmse,
                     "best_epoch": result.best_epoch, "train_seconds": result.train_seconds})
        (log or print)(f"tau {tau}: validation RMSE {result.best_val_rmse:.4f} @ {result.best_epoch}")
    return rows
