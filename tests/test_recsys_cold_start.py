"""The cold-start protocol on synthetic ratings: held-out users stay out of training, each
model's fold-in reproduces what training learned for a user it has seen, and the rows the
table gets are scored on the right users."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lab_pipelines.recsys.baselines import BiasBaseline, SurpriseSVD, SVDParams
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.cold_start import (BUCKETS, FOLD_IN_GRIDS, KS, bucket_rows,
                                             choose_fold_in, cold_start_rows, cold_user_split,
                                             plot_png, summary_table)
from lab_pipelines.recsys.data import random_split
from lab_pipelines.recsys.metrics import rmse
from lab_pipelines.recsys.synthetic import synthetic_ratings
from lab_pipelines.recsys.train import train_cmc

SMALL = CMCConfig(dim=32, max_epochs=200, patience=60)


@pytest.fixture(scope="module")
def ratings() -> pl.DataFrame:
    return synthetic_ratings(n_users=200, density=0.3)


@pytest.fixture(scope="module")
def cold(ratings):
    return cold_user_split(ratings, "synthetic", seed=0)


@pytest.fixture(scope="module")
def models(cold):
    split = cold.split
    cmc, _ = train_cmc(split, SMALL, "cpu", log=lambda _: None)
    return {"bias": BiasBaseline().fit(split),
            "svd_tuned": SurpriseSVD(SVDParams(n_factors=10, n_epochs=20)).fit(split),
            "cmc": cmc}


def test_held_out_users_never_appear_in_training(ratings, cold):
    held_out = set(cold.cold.get_column("user").to_list())
    # 10% of the users for test, another 10% for choosing fold-in knobs, none in both.
    by_part = cold.cold.group_by("part").agg(pl.col("user").unique())
    test_users, val_users = (set(by_part.filter(pl.col("part") == p).get_column("user")[0])
                             for p in ("test", "val"))
    assert len(test_users) == len(val_users) == round(0.1 * ratings.get_column("user_id")
                                                      .n_unique())
    assert test_users | val_users == held_out and not test_users & val_users
    for part in ("train", "val", "test"):
        assert held_out.isdisjoint(getattr(cold.split, part).get_column("user").to_list())
    # Every rating of a held-out user is in `cold`, once; the rest are the warm split's.
    assert cold.cold.height + sum(getattr(cold.split, p).height
                                  for p in ("train", "val", "test")) == ratings.height
    # Draws nest across k, and what is scored is never what a model was shown.
    given = {k: set(zip(*cold.given(k)[:2])) for k in KS}
    assert given[1] < given[3] < given[5] < given[10]
    assert given[10].isdisjoint(zip(*cold.target()[:2]))
    assert all(n == 10 for n in pl.DataFrame({"u": cold.given(10)[0]}).group_by("u").len()
               .get_column("len"))
    # Seeded: the same users again, other users with another seed.
    again = cold_user_split(ratings, "synthetic", seed=0).cold.get_column("user").unique()
    other = cold_user_split(ratings, "synthetic", seed=1).cold.get_column("user").unique()
    assert again.sort().to_list() == sorted(held_out) != other.sort().to_list()


def test_cmc_fold_in_of_a_trained_user_gives_the_trained_prediction(cold, models):
    cmc, split = models["cmc"], cold.split
    users, items, ratings = split.arrays("train")
    test_u, test_i, test_r = split.arrays("test")
    # Through the encoder from the user's own training edges: the embedding training made.
    known = cmc.folded(users, items, ratings, known=True)
    np.testing.assert_allclose(known.predict(test_u, test_i), cmc.predict(test_u, test_i),
                               atol=1e-5)
    # As a newcomer (its edges add to the item degrees, the mean gate row): close, and as
    # good on test.
    stranger = cmc.folded(users, items, ratings).predict(test_u, test_i)
    assert np.abs(stranger - cmc.predict(test_u, test_i)).mean() < 0.05
    assert rmse(stranger, test_r) < rmse(cmc.predict(test_u, test_i), test_r) + 0.02
    # Centred, a newcomer's evidence moves it from the mean trained user rather than from a
    # user with no edges: the same step, another starting point.
    one = (np.array([split.n_users]), items[:1], ratings[:1])
    mean = cmc.z_user[np.unique(users)].mean(0)
    empty = cmc.model.user_dense(torch.zeros(1, SMALL.dim))[0].detach()
    np.testing.assert_allclose(cmc.folded(*one, centre=True).z_user[-1] - mean,
                               cmc.folded(*one).z_user[-1] - empty, atol=1e-5)


def test_baseline_fold_ins_recover_the_trained_user(cold, models):
    split = cold.split
    users, items, ratings = split.arrays("train")
    bias = models["bias"]
    # The bias fit's last step is the fold-in's formula: the same offsets, exactly.
    np.testing.assert_allclose(bias.folded(users, items, ratings).bu, bias.bu, atol=1e-9)
    svd = models["svd_tuned"]
    test_u, test_i, test_r = split.arrays("test")
    refit = svd.folded(users, items, ratings).predict(test_u, test_i)
    # SGD from zero with items fixed lands near surprise's own user fit.
    assert np.corrcoef(refit, svd.predict(test_u, test_i))[0, 1] > 0.9
    assert rmse(refit, test_r) < rmse(bias.predict(test_u, test_i), test_r) + 0.05


def test_cold_start_rows_score_held_out_users_better_with_more_ratings(cold, models):
    rows = pl.DataFrame(cold_start_rows(cold, models))
    assert rows.height == len(KS) * 3
    assert set(rows.get_column("protocol")) == {"cold_users"}
    assert rows.get_column("split").unique().to_list() == ["coldusers10_seed0/test_users"]
    assert rows.get_column("n_users").unique().to_list() == [20]
    for model in models:
        mine = rows.filter(pl.col("model") == model).sort("k")
        assert mine.get_column("rmse")[-1] < mine.get_column("rmse")[0], model
        assert all(0 <= v <= 1 for v in mine.get_column("recall_at_10"))
    assert plot_png(rows, "synthetic").startswith(b"\x89PNG")
    assert summary_table(rows).height == rows.height  # one seed: one row per model and k


def test_bucket_rows_partition_the_test_users():
    split = random_split(synthetic_ratings(n_users=120, density=0.1), "synthetic", seed=0)
    rows = pl.DataFrame(bucket_rows(split, {"bias": BiasBaseline().fit(split)}, seed=0))
    assert rows.get_column("bucket").to_list() == [b[0] for b in BUCKETS]
    assert rows.get_column("n_users").sum() == len(np.unique(split.arrays("test")[0]))
    filled = rows.filter(pl.col("n_users") > 0)
    assert filled.height >= 2 and filled.get_column("rmse").is_not_null().all()


def test_fold_in_knobs_are_chosen_on_the_validation_users(cold, models):
    grid = FOLD_IN_GRIDS["cmc"][:3]  # as trained, centred, centred with degree power 1/4
    chosen, table = choose_fold_in(cold, "cmc", models["cmc"], grid)
    assert len(table) == len(grid)
    assert chosen.knobs == min(table, key=lambda r: r["val_rmse"])["knobs"]
    # Each candidate's figure is its RMSE over the validation users, who are not test users.
    val_rows = cold_start_rows(cold, {"cmc": chosen}, part="val")
    assert np.mean([r["rmse"] for r in val_rows]) == pytest.approx(
        min(r["val_rmse"] for r in table))
    assert set(cold.target(part="val")[0]).isdisjoint(cold.target()[0])
