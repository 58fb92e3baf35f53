"""Baselines and CMC on a synthetic low-rank matrix: CMC must learn the structure the bias
baseline cannot, and its checkpoint must reproduce its predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab_pipelines.recsys.baselines import BiasBaseline, SurpriseSVD, SVDParams
from lab_pipelines.recsys.cmc import CMC, CMCConfig, CMCPredictor, Graph, info_nce
from lab_pipelines.recsys.data import packaged_split, random_split
from lab_pipelines.recsys.metrics import evaluate, rmse
from lab_pipelines.recsys.synthetic import synthetic_ratings
from lab_pipelines.recsys.train import load_checkpoint, train_cmc

SMALL = CMCConfig(dim=32, max_epochs=200, patience=60)


@pytest.fixture(scope="module")
def split():
    return random_split(synthetic_ratings(), "synthetic", val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt") / "cmc.pt"
    predictor, result = train_cmc(split, SMALL, "cpu", ckpt, log=lambda _: None)
    return predictor, result, ckpt


def test_bias_baseline_beats_global_mean(split):
    ratings = split.arrays("test")[2]
    bias = evaluate(BiasBaseline().fit(split), split)
    global_mean = float(np.sqrt(np.mean((split.arrays("train")[2].mean() - ratings) ** 2)))
    assert bias["rmse"] < global_mean - 0.05


def test_surprise_svd_bulk_predictions_match_its_own(split):
    model = SurpriseSVD(SVDParams(n_factors=10, n_epochs=5)).fit(split)
    users, items, _ = split.arrays("test")
    bulk = model.predict(users, items)
    # Recompute from surprise's formula for the first few pairs, one at a time.
    for u, i, p in list(zip(users, items, bulk))[:20]:
        manual = model.mu + model.bu[u] + model.bi[i] + model.pu[u] @ model.qi[i]
        assert p == pytest.approx(np.clip(manual, *model.scale))


def test_cmc_beats_bias_baseline(split, trained):
    predictor, result, _ = trained
    cmc = evaluate(predictor, split)
    bias = evaluate(BiasBaseline().fit(split), split)
    assert cmc["rmse"] < bias["rmse"] - 0.05, (cmc, bias)
    assert result.history[-1]["val_rmse"] < result.history[0]["val_rmse"]
    assert 0 < cmc["catalog_coverage"] <= 1 and 0 <= cmc["recall_at_10"] <= 1


def test_checkpoint_reproduces_predictions(split, trained):
    predictor, _, ckpt = trained
    users, items, _ = split.arrays("test")
    reloaded = load_checkpoint(ckpt)
    np.testing.assert_allclose(reloaded.predict(users, items), predictor.predict(users, items),
                               rtol=1e-5)
    assert not list(ckpt.parent.glob(".*tmp*"))  # the atomic write left no temp file


def test_cold_items_fall_back_to_the_rating_histogram():
    # Item 2 has no training ratings: it must still get a finite prediction inside the scale.
    graph = Graph.from_ratings(np.array([0, 1]), np.array([0, 1]), np.array([1.0, 5.0]), 2, 3)
    predictor = CMCPredictor(CMC(CMCConfig(dim=8), 2, 3, 2), graph)
    pred = predictor.predict(np.array([0, 1]), np.array([2, 2]))
    assert np.all(np.isfinite(pred)) and np.all((pred >= 1) & (pred <= 5))


def test_info_nce_prefers_aligned_views():
    torch.manual_seed(0)
    a = torch.randn(64, 16)
    nodes = torch.arange(64)
    aligned = info_nce(a, a + 0.01 * torch.randn(64, 16), 0.1, nodes)
    shuffled = info_nce(a, a[torch.randperm(64)], 0.1, nodes)
    assert aligned < 0.1 < shuffled


def test_kept_weights_are_the_validated_moving_average(split, trained):
    predictor, result, _ = trained
    assert SMALL.ema_decay > 0  # the default: the average, not the live weights, is kept
    users, items, ratings = split.arrays("val")
    assert rmse(predictor.predict(users, items), ratings) == pytest.approx(result.best_val_rmse,
                                                                           abs=1e-6)


def test_side_features_off_or_absent_leave_cmc_as_before():
    # Predictions of the model as it was before item side features existed (same data,
    # config and seed, recorded from that code): a dataset without side features, or the
    # switch off, must train exactly that model.
    split = random_split(synthetic_ratings(n_users=60, n_items=40, density=0.5), "synthetic",
                         val_fraction=0.1, seed=0)
    before = [2.84494948, 2.71184230, 2.81940556, 2.89848375, 2.87529349, 2.79674315]
    users, items, _ = split.arrays("test")
    for item_side in (False, True):
        cfg = CMCConfig(dim=8, max_epochs=150, patience=1000, item_side=item_side)
        predictor, _ = train_cmc(split, cfg, "cpu", log=lambda _: None)
        assert predictor.model.item_side is None
        np.testing.assert_allclose(predictor.predict(users[:6], items[:6]), before, atol=1e-4)


def test_side_features_train_checkpoint_and_fold_in(tmp_path):
    split = packaged_split("ml-100k")
    ckpt = tmp_path / "cmc.pt"
    predictor, _ = train_cmc(split, CMCConfig(dim=16, max_epochs=10, item_side=True), "cpu",
                             ckpt, log=lambda _: None)
    assert predictor.graph.item_side.shape == (1682, 27)
    users, items, _ = split.arrays("test")
    pred = predictor.predict(users, items)
    # The side messages move the predictions: zeroing their branch changes them.
    plain = load_checkpoint(ckpt)
    torch.nn.init.zeros_(plain.model.item_side[2].weight)
    assert np.abs(CMCPredictor(plain.model, plain.graph).predict(users, items) - pred).max() > 1e-4
    # The checkpoint carries the features, and folding a trained user back in through the
    # encoder (side messages included) gives the trained embedding.
    np.testing.assert_allclose(load_checkpoint(ckpt).predict(users, items), pred, rtol=1e-5)
    train_u, train_i, train_r = split.arrays("train")
    known = predictor.folded(train_u, train_i, train_r, known=True)
    np.testing.assert_allclose(known.predict(users, items), pred, atol=1e-5)
