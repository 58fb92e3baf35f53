"""Cold start: how bias, tuned SVD and CMC do for users with almost no history.

Two protocols, one table (`recsys_cold_start`):

  cold_users    strict cold start. 10% of the users (seeded) are held out entirely for
                test and another 10% for validation: none of their ratings is in train or
                validation. The models are trained on the rest. At test time each model sees
                k = 1, 3, 5, 10 of a held-out user's ratings (a seeded draw, the first k of
                one random order per user, so the k = 3 set holds the k = 1 one) and
                predicts the others, without retraining. The scored ratings are the same for
                every k: all of the user's ratings after the first 10 of that order.
                Fold-in: bias keeps the item means and fits the user's shrunken offset; SVD
                runs surprise's SGD on the user's bias and vector with every item fixed; CMC
                embeds the user through its graph encoder from the k new edges
                (`CMCPredictor.folded`), no weight changed. Each model's fold-in knobs are
                chosen on the validation users only.
  warm_buckets  the ordinary split, test users grouped by their number of training ratings
                (1-5, 6-20, 21-50, > 50), each group scored on its own.

Each row has RMSE, Recall@10, NDCG@10, catalog coverage and long-tail share
(`metrics.ranking_metrics`, relevant = rated >= 4, the head counted on train), over the users
of its group only: coverage of a group of 90 users is not comparable with coverage over 943.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl
import torch

from lab_pipelines.progress import LogFn
from lab_pipelines.recsys.baselines import BiasBaseline, SurpriseSVD, SVDParams, tune_svd
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.data import RatingSplit, _index, _shuffle_mask, packaged_ratings
from lab_pipelines.recsys.metrics import RatingModel, head_items, ranking_metrics, rmse
from lab_pipelines.recsys.train import train_cmc

if TYPE_CHECKING:
    from lab_pipelines.report import Section

KS = (1, 3, 5, 10)
# (label, fewest, most) training ratings of a bucket's users.
BUCKETS = (("1-5", 1, 5), ("6-20", 6, 20), ("21-50", 21, 50), (">50", 51, None))
COLUMNS = ("model", "dataset", "seed", "protocol", "k", "bucket", "split", "n_users", "rmse",
           "recall_at_10", "ndcg_at_10", "catalog_coverage", "long_tail_share")
METRICS = ("rmse", "recall_at_10", "ndcg_at_10", "catalog_coverage", "long_tail_share")


class FoldInModel(RatingModel, Protocol):
    def folded(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray
               ) -> RatingModel:
        """The model with `users` re-embedded from these ratings alone, nothing retrained."""


@dataclass
class ColdStartSplit:
    """A split whose train, validation and test hold only the warm users' ratings; the cold
    users are indexed (so every model has a row for them) but never seen in training. Two
    disjoint sets of them: `test` users are scored, `val` users are what a fold-in's knobs may
    be chosen on."""

    split: RatingSplit
    cold: pl.DataFrame  # user, item, rating, part (test|val), order (in the user's draw)
    seed: int

    def given(self, k: int, part: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first k ratings of every cold user of `part`: what a model may fold in."""
        return _arrays(self.cold.filter((pl.col("part") == part) & (pl.col("order") < k)))

    def target(self, ks: Sequence[int] = KS, part: str = "test"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ratings scored at every k: each cold user's ratings past the largest k."""
        return _arrays(self.cold.filter((pl.col("part") == part)
                                        & (pl.col("order") >= max(ks))))


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (frame.get_column("user").to_numpy(), frame.get_column("item").to_numpy(),
            frame.get_column("rating").to_numpy())


def cold_user_split(ratings: pl.DataFrame, dataset: str, seed: int = 0,
                    user_fraction: float = 0.1, val_user_fraction: float = 0.1,
                    test_fraction: float = 0.2, val_fraction: float = 0.05) -> ColdStartSplit:
    """Hold out a seeded `user_fraction` of the users for test and another
    `val_user_fraction` for validation; split the rest's ratings as the ordinary protocol
    does (random test share, validation carved from train)."""
    users = ratings.get_column("user_id").unique().sort()
    order = np.random.default_rng(seed + 2).permutation(len(users))
    n_test, n_val = round(user_fraction * len(users)), round(val_user_fraction * len(users))
    part = np.full(len(users), "", dtype=object)
    part[order[:n_test]], part[order[n_test:n_test + n_val]] = "test", "val"
    parts = pl.DataFrame({"user_id": users, "part": pl.Series(part.tolist(), dtype=pl.Utf8)})
    tagged = ratings.join(parts, on="user_id", how="left", maintain_order="left")
    warm, cold = tagged.filter(pl.col("part") == "").drop("part"), tagged.filter(
        pl.col("part") != "")
    test = _shuffle_mask(warm.height, test_fraction, seed)
    # The cold ratings go in with test only so that their users and items get an index.
    split = _index(warm.filter(~test), pl.concat([warm.filter(test), cold.drop("part")]),
                   val_fraction, seed, dataset,
                   f"coldusers{round(100 * user_fraction)}_seed{seed}")
    n_warm_test = int(test.sum())
    cold_ix = split.test.slice(n_warm_test).with_columns(cold.get_column("part"))
    split.test = split.test.head(n_warm_test)
    # One random order per user: given(k) is its first k, so draws nest across k.
    rng = np.random.default_rng(seed + 3)
    cold_ix = cold_ix.with_columns(pl.Series("key", rng.random(cold_ix.height))).with_columns(
        (pl.col("key").rank("ordinal").over("user") - 1).cast(pl.Int32).alias("order")
    ).drop("key")
    return ColdStartSplit(split, cold_ix, seed)


class _Users:
    """A model seen through some of its users, renumbered 0..m-1 (the metrics score users
    0..n-1, so a group is scored as a model of its own users)."""

    def __init__(self, model: RatingModel, users: np.ndarray):
        self.model, self.users = model, users

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.predict(self.users[users], items)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        return self.model.score_users(self.users[users])


def group_metrics(model: RatingModel, users: np.ndarray, seen: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray, np.ndarray], n_items: int,
                  head: np.ndarray) -> dict[str, float]:
    """RMSE on the group's test ratings and ranking metrics over the group's users only,
    items in `seen` excluded from their lists."""
    position = np.full(max(int(users.max()), int(seen[0].max(initial=0)),
                           int(test[0].max())) + 1, -1)
    position[users] = np.arange(len(users))

    def mine(u: np.ndarray) -> np.ndarray:
        return position[u] >= 0

    su, si = (a[mine(seen[0])] for a in seen)
    tu, ti, tr = (a[mine(test[0])] for a in test)
    if len(tu) == 0:
        return {"n_users": 0, **dict.fromkeys(METRICS)}
    sub = _Users(model, users)
    ranked = ranking_metrics(sub, (position[su], si), (position[tu], ti, tr), len(users),
                             n_items, head=head)
    return {"n_users": len(users), "rmse": rmse(model.predict(tu, ti), tr),
            **{m: ranked[m] for m in METRICS[1:]}}


def cold_start_rows(cs: ColdStartSplit, models: Mapping[str, FoldInModel],
                    ks: Sequence[int] = KS, part: str = "test") -> list[dict]:
    """One `cold_users` row per model and k, on the held-out users of `part`."""
    split = cs.split
    head = head_items(split.arrays("train")[1], split.n_items)
    target = cs.target(ks, part)
    users = np.unique(target[0])
    rows = []
    for k in ks:
        given = cs.given(k, part)
        for name, model in models.items():
            got = group_metrics(model.folded(*given), users, given[:2], target, split.n_items,
                                head)
            rows.append({"model": name, "dataset": split.dataset, "seed": cs.seed,
                         "protocol": "cold_users", "k": k, "bucket": "all",
                         "split": f"{split.split}/{part}_users", **got})
    return rows


class WithKnobs:
    """A fold-in model whose `folded` always gets these knobs."""

    def __init__(self, model: FoldInModel, knobs: Mapping[str, float]):
        self.model, self.knobs = model, dict(knobs)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.predict(users, items)

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        return self.model.score_users(users)

    def folded(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> RatingModel:
        return self.model.folded(users, items, ratings, **self.knobs)


# The fold-in knobs each model chooses among on the validation users (never on test): the
# bias baseline's shrinkage, SVD's SGD epochs and regularisation, and for CMC centring on the
# mean trained user, the user-side degree power and Adam steps on the new embedding with
# their pull toward the encoder's (`CMCPredictor.folded`). The first of each grid is the
# model's own training setting.
FOLD_IN_GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "bias": ({}, {"reg_user": 5.0}, {"reg_user": 30.0}),
    "svd_tuned": ({}, *({"n_epochs": e, "reg_all": r} for e in (10, 20, 40)
                        for r in (0.08, 0.5, 2.0))),
    "cmc": ({}, {"centre": True}, {"centre": True, "user_norm": 0.25},
            *({"centre": True, "user_norm": n, "steps": 30, "anchor": a}
              for n in (0.5, 0.25) for a in (3.0, 10.0, 30.0))),
}


def choose_fold_in(cs: ColdStartSplit, name: str, model: FoldInModel,
                   grid: Sequence[Mapping[str, float]], ks: Sequence[int] = KS
                   ) -> tuple[WithKnobs, list[dict]]:
    """The knobs with the lowest RMSE averaged over every k on the validation users, and each
    candidate's validation rows."""
    table = []
    for knobs in grid:
        rows = cold_start_rows(cs, {name: WithKnobs(model, knobs)}, ks, part="val")
        table.append({"fold_in": _label(knobs), "knobs": dict(knobs),
                      "val_rmse": float(np.mean([r["rmse"] for r in rows])),
                      "val_recall_at_10": float(np.mean([r["recall_at_10"] for r in rows]))})
    best = min(table, key=lambda r: r["val_rmse"])
    return WithKnobs(model, best["knobs"]), table


def _label(knobs: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in knobs.items()) or "as trained"


def bucket_rows(split: RatingSplit, models: Mapping[str, RatingModel], seed: int) -> list[dict]:
    """One `warm_buckets` row per model and activity bucket, on the split's test set."""
    train_u, train_i, _ = split.arrays("train")
    val_u, val_i, _ = split.arrays("val")
    seen = (np.concatenate([train_u, val_u]), np.concatenate([train_i, val_i]))
    test = split.arrays("test")
    head = head_items(train_i, split.n_items)
    count = np.bincount(train_u, minlength=split.n_users)
    tested = np.unique(test[0])
    rows = []
    for label, low, high in BUCKETS:
        users = tested[(count[tested] >= low) & (count[tested] <= (high or count.max()))]
        for name, model in models.items():
            got = (group_metrics(model, users, seen, test, split.n_items, head) if len(users)
                   else {"n_users": 0, **dict.fromkeys(METRICS)})
            rows.append({"model": name, "dataset": split.dataset, "seed": seed,
                         "protocol": "warm_buckets", "k": None, "bucket": label,
                         "split": f"{split.split}/test", **got})
    return rows


@dataclass
class ColdStartRun:
    rows: list[dict]  # test users, every model at its validation-chosen fold-in knobs
    seconds: dict[str, float]  # training time per model
    cmc_val_rmse: float
    svd: SVDParams
    choices: dict[str, list[dict]]  # per model: every fold-in candidate's validation figures


def run_cold_start(dataset: str, seed: int, cmc: CMCConfig | None = None,
                   svd: SVDParams | None = None, device: str = "cpu", ks: Sequence[int] = KS,
                   ratings: pl.DataFrame | None = None, log: LogFn = print) -> ColdStartRun:
    """The strict cold start on one seed: hold out the users, train the three models on the
    rest (`svd` None: tuned on this split's validation; CMC with `cmc`'s knobs and this seed),
    fold the held-out users in at every k and score them."""
    ratings = packaged_ratings(dataset) if ratings is None else ratings
    cmc = cmc or CMCConfig()
    cs = cold_user_split(ratings, dataset, seed)
    split = cs.split
    if svd is None:
        svd, _ = tune_svd(split)
    seconds, models = {}, {}
    for name, fit in (("bias", lambda: BiasBaseline().fit(split)),
                      ("svd_tuned", lambda: SurpriseSVD(replace(svd, random_state=seed)
                                                        ).fit(split)),
                      ("cmc", lambda: train_cmc(split, replace(cmc, seed=seed), device,
                                                log=log))):
        start = time.perf_counter()
        models[name] = fit()
        seconds[name] = time.perf_counter() - start
    predictor, result = models["cmc"]
    models["cmc"] = predictor
    log(f"{dataset} seed {seed}: {cs.cold.get_column('user').n_unique()} held-out users "
        f"(half test, half validation); trained in "
        f"{', '.join(f'{m} {s:.0f} s' for m, s in seconds.items())}")
    chosen, choices = {}, {}
    for name, model in models.items():
        chosen[name], choices[name] = choose_fold_in(cs, name, model, FOLD_IN_GRIDS[name], ks)
        log(f"{name}: fold-in {_label(chosen[name].knobs)} chosen on validation users")
    rows = [{**r, "fold_in": _label(chosen[r["model"]].knobs),
             "val_rmse": min(c["val_rmse"] for c in choices[r["model"]])}
            for r in cold_start_rows(cs, chosen, ks)]
    return ColdStartRun(rows, seconds, result.best_val_rmse, svd, choices)


def spread(rows: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over seeds per dataset, protocol, k, bucket and model."""
    keys = ("dataset", "protocol", "k", "bucket", "model")
    return rows.group_by(*keys, maintain_order=True).agg(
        pl.len().alias("seeds"), pl.col("n_users").mean().round().cast(pl.Int64),
        *(pl.col(m).mean() for m in METRICS),
        *(pl.col(m).std().alias(f"{m}_sd") for m in ("rmse", "recall_at_10")))


def plot_png(rows: pl.DataFrame, title: str) -> bytes:
    """RMSE and Recall@10 against k, one line per model (mean over seeds, bars = sd)."""
    from lab_pipelines.recsys.benchmark import _png, _pyplot

    plt = _pyplot()
    table = spread(rows.filter(pl.col("protocol") == "cold_users")).sort("k")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for model in table.get_column("model").unique(maintain_order=True):
        mine = table.filter(pl.col("model") == model)
        k = mine.get_column("k").to_numpy()
        for ax, metric in zip(axes, ("rmse", "recall_at_10")):
            sd = mine.get_column(f"{metric}_sd").fill_null(0.0).to_numpy()
            ax.errorbar(k, mine.get_column(metric).to_numpy(), yerr=sd, marker="o",
                        capsize=3, label=model)
    for ax, label in zip(axes, ("RMSE (lower is better)", "Recall@10")):
        ax.set_xlabel("ratings seen per held-out user (k)")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(set(table.get_column("k").to_list())))
    axes[1].legend()
    fig.suptitle(title)
    return _png(fig)


def summary_table(rows: pl.DataFrame) -> pl.DataFrame:
    """The figures a reader compares: per dataset, protocol, k/bucket and model."""
    table = spread(rows)
    return table.select(
        "dataset", "protocol", "k", "bucket", "model", "seeds", "n_users",
        *(pl.col(m).round(4) for m in METRICS),
        *(pl.col(f"{m}_sd").round(4) for m in ("rmse", "recall_at_10")))


def latest_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Each dataset's rows from the latest run that wrote it."""
    if table.is_empty():
        return table
    last = table.sort("created_at").group_by("dataset").agg(pl.col("run_id").last())
    return table.join(last, on=["dataset", "run_id"])


def report_section(db_path: Path, data_root: Path) -> Section | None:
    """The HTML report's cold-start section (None before `recsys_cold_start` has run): per
    dataset, the plot against k and the cold-start and bucket tables of its latest run."""
    from lab_pipelines.report import Section, html_table
    from lab_pipelines.tables import image_markdown, markdown_table, read_table

    if not Path(db_path).is_file():
        return None
    rows = latest_rows(read_table("recsys_cold_start", db_path))
    if rows.is_empty():
        return None
    markdown, parts = [], []
    for dataset in sorted(rows.get_column("dataset").unique().to_list()):
        mine = rows.filter(pl.col("dataset") == dataset)
        seeds = sorted(mine.get_column("seed").unique().to_list())
        png = plot_png(mine, f"Strict cold start, {dataset} (seeds {seeds})")
        table = summary_table(mine)
        markdown += [f"### {dataset}", image_markdown(png, f"cold start {dataset}"),
                     markdown_table(table, float_digits=4)]
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        parts.append(f"<h3>{html.escape(dataset)}</h3><img alt='cold start "
                     f"{html.escape(dataset)}' src='{uri}'>{html_table(table)}")
    return Section("recsys-cold-start", "CMC cold start and activity buckets",
                   "\n\n".join(markdown), "".join(parts))
