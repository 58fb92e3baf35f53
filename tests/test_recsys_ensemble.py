"""The CMC seed ensemble on a small synthetic matrix: averaging members that really differ
is no worse than the average member, and the size is chosen on validation alone."""

from __future__ import annotations

import numpy as np
import pytest

from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.data import random_split
from lab_pipelines.recsys.ensemble import (Member, SeedEnsemble, choose_size, member_config,
                                           train_seed_ensemble)
from lab_pipelines.recsys.metrics import evaluate, rmse
from lab_pipelines.recsys.synthetic import synthetic_ratings
from lab_pipelines.recsys.train import load_checkpoint

TINY = CMCConfig(dim=16, max_epochs=80, patience=40, seed=3)


@pytest.fixture(scope="module")
def split():
    return random_split(synthetic_ratings(n_users=80, n_items=60, density=0.3), "synthetic",
                        val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def ensemble(split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return train_seed_ensemble(split, TINY, 3, "cpu",
                               checkpoint_for=lambda seed: folder / f"cmc_seed{seed}.pt",
                               log=lambda _: None), folder


def test_ensemble_is_no_worse_than_its_average_member(split, ensemble):
    got, _ = ensemble
    users, items, ratings = split.arrays("test")
    members = [m.predictor for m in got.members]
    member_rmse = [rmse(m.predict(users, items), ratings) for m in members]
    everyone = SeedEnsemble(members)
    # RMSE is a norm of the error vector, so the mean prediction's RMSE is at most the
    # members' mean RMSE (triangle inequality); wrong averaging or misaligned rows break it.
    assert rmse(everyone.predict(users, items), ratings) <= np.mean(member_rmse)
    # The members are the seeds 3, 4, 5 of one config, and they really differ.
    assert [m.seed for m in got.members] == [3, 4, 5]
    assert [m.model.cfg for m in members] == [member_config(TINY, k) for k in range(3)]
    predictions = [m.predict(users, items) for m in members]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(predictions[a] - predictions[b]).mean() > 1e-3


def test_ensemble_ranks_and_reloads(split, ensemble):
    got, folder = ensemble
    figures = evaluate(got.model, split)
    assert np.isfinite(figures["rmse"]) and 0 < figures["catalog_coverage"] <= 1
    # Each member's checkpoint reproduces it; given back as member 0, nothing is retrained.
    first = got.members[0]
    reloaded = load_checkpoint(folder / "cmc_seed3.pt")
    users, items, _ = split.arrays("val")
    np.testing.assert_allclose(reloaded.predict(users, items),
                               first.predictor.predict(users, items), rtol=1e-5)
    again = train_seed_ensemble(split, TINY, 1, "cpu", [Member(3, reloaded, 1.0, 0)],
                                log=lambda _: None)
    assert again.n_models == 1 and again.train_seconds == 1.0
    with pytest.raises(ValueError, match="other knobs"):
        train_seed_ensemble(split, CMCConfig(dim=16, seed=3), 1, "cpu",
                            [Member(3, reloaded, 1.0, 0)])


def test_size_is_the_smallest_within_a_standard_error_of_the_best():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=2000)
    # Members with independent errors: each one added clearly helps, so all three are kept.
    independent = [truth + rng.normal(size=2000) for _ in range(3)]
    assert choose_size(independent, truth)[0] == 3
    # A much noisier second member makes the mean worse: one model is kept.
    n, rows = choose_size([independent[0], truth + 3.0 * rng.normal(size=2000)], truth)
    assert n == 1 and [r["n_models"] for r in rows] == [1, 2]
    assert rows[0]["val_mse_excess"] == 0.0 < rows[1]["val_mse_excess"]
    # A copy adds nothing, so the smaller ensemble is within noise of the best.
    assert choose_size([independent[0], independent[0]], truth)[0] == 1
