"""Benchmark rows: fit a model on a split, time it, evaluate it with `metrics.evaluate`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np

from lab_pipelines.recsys.baselines import SVD_TUNED, BiasBaseline, SurpriseSVD, SVDParams
from lab_pipelines.recsys.data import RatingSplit
from lab_pipelines.recsys.metrics import RatingModel, evaluate, rmse


def row(model_name: str, split: RatingSplit, model: RatingModel, train_seconds: float,
        **extra: object) -> dict:
    """One `recsys_benchmark` row: test metrics plus validation RMSE (the selection metric)."""
    val_u, val_i, val_r = split.arrays("val")
    return {"model": model_name, "dataset": split.dataset, "split": split.split,
            **evaluate(model, split), "val_rmse": rmse(model.predict(val_u, val_i), val_r),
            "train_seconds": train_seconds, **extra}


def _timed(fit: Callable[[], RatingModel]) -> tuple[RatingModel, float]:
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def baseline_rows(split: RatingSplit, tuned: SVDParams = SVD_TUNED) -> list[dict]:
    """Bias baseline, surprise SVD with its defaults, and surprise SVD with tuned knobs."""
    rows = []
    for name, fit in [("bias", lambda: BiasBaseline().fit(split)),
                      ("svd_default", lambda: SurpriseSVD(SVDParams()).fit(split)),
                      ("svd_tuned", lambda: SurpriseSVD(tuned).fit(split))]:
        model, seconds = _timed(fit)
        rows.append(row(name, split, model, seconds))
    return rows


def learning_curve_png(history: list[dict], title: str = "CMC") -> bytes:
    """Train loss and validation RMSE per epoch, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.array([h["epoch"] for h in history])
    fig, left = plt.subplots(figsize=(6, 3.5), dpi=100)
    left.plot(epochs, [h["train_loss"] for h in history], color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, [h["val_rmse"] for h in history], color="tab:red")
    right.set_ylabel("validation RMSE", color="tab:red")
    left.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
