"""The recsys asset group materialized in process on a small synthetic ratings file."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets_defs import recsys
from assets_defs.resources import resources_for
from lab_pipelines.recsys.synthetic import synthetic_ratings, write_u_data
from lab_pipelines.tables import read_table

ASSETS = [recsys.movielens_ratings, recsys.svd_baseline, recsys.cmc_model,
          recsys.cmc_ensemble, recsys.cmc_temperature_sweep, recsys.recsys_benchmark,
          recsys.cmc_beats_svd, recsys.recsys_cold_start]


def _run_config(ratings_path, **ratings_extra) -> dict:
    return {"ops": {
        "movielens_ratings": {"config": {"ratings_path": str(ratings_path), "dataset": "toy",
                                         "val_fraction": 0.1, **ratings_extra}},
        "svd_baseline": {"config": {"tuned_factors": 20, "tuned_epochs": 20}},
        "cmc_model": {"config": {"dim": 32, "max_epochs": 150, "patience": 60}},
        "cmc_ensemble": {"config": {"max_models": 2}},
        "cmc_temperature_sweep": {"config": {"taus": [0.1, 0.5], "max_epochs": 10}},
        "recsys_cold_start": {"config": {"ratings_path": str(ratings_path)}},
    }}


def test_group_materializes_and_writes_the_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    ratings = tmp_path / "u.data"
    write_u_data(synthetic_ratings(), ratings)
    result = dg.materialize(ASSETS, resources=resources_for("embedded"),
                            run_config=_run_config(ratings))
    assert result.success
    rows = read_table("recsys_benchmark", tmp_path / "data" / "lab.duckdb")
    assert sorted(rows.get_column("model").to_list()) == ["bias", "cmc", "cmc_discounted",
                                                         "cmc_ensemble", "svd_default",
                                                         "svd_tuned"]
    assert set(rows.get_column("run_id").to_list()) == {result.run_id}
    rmse = dict(zip(rows.get_column("model").to_list(), rows.get_column("rmse").to_list()))
    assert rmse["cmc"] < rmse["bias"]
    assert rows.get_column("split").unique().to_list() == ["random80_seed0"]
    assert list((tmp_path / "data" / "checkpoints").glob("cmc_toy_random80_seed0.pt"))
    folder = tmp_path / "data" / "recsys" / "toy" / "random80_seed0"
    assert (folder / "train.parquet").is_file()
    # The ensemble's member 0 is cmc_model's checkpoint; only seed 1 was trained for it.
    assert [p.name for p in folder.glob("cmc_seed*.pt")] == ["cmc_seed1.pt"]
    ensemble = rows.filter(pl.col("model") == "cmc_ensemble").row(0, named=True)
    assert ensemble["n_models"] in (1, 2)
    assert "| n_models |" in result.asset_materializations_for_node(
        "cmc_ensemble")[0].metadata["size_on_validation"].value
    sweep = result.asset_materializations_for_node("cmc_temperature_sweep")[0].metadata
    assert "| 0.5" in sweep["table"].value
    bench = result.asset_materializations_for_node("recsys_benchmark")[0].metadata
    assert "data:image/png;base64," in bench["learning_curve"].value
    assert "| ranking |" in bench["ranking_on_validation"].value
    tail = dict(zip(rows.get_column("model").to_list(), rows.get_column("long_tail_share")))
    assert all(0.0 <= share <= 1.0 for share in tail.values())
    cold = read_table("recsys_cold_start", tmp_path / "data" / "lab.duckdb")
    assert set(cold.get_column("run_id")) == {result.run_id}
    assert cold.filter(pl.col("protocol") == "cold_users").height == 4 * 3  # k x models
    assert set(cold.filter(pl.col("protocol") == "warm_buckets").get_column("split")) == {
        "random80_seed0/test"}
    assert cold.get_column("machine").is_not_null().all()
    meta = result.asset_materializations_for_node("recsys_cold_start")[0].metadata
    assert "data:image/png;base64," in meta["plot_toy"].value
    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["cmc_beats_svd"]
    assert checks[0].metadata["cmc_rmse"].value == pytest.approx(rmse["cmc"])


def test_canonical_split_is_used_when_given(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    frame = synthetic_ratings(n_users=60, n_items=50, density=0.3)
    write_u_data(frame.head(700), tmp_path / "u1.base")
    write_u_data(frame.tail(frame.height - 700), tmp_path / "u1.test")
    result = dg.materialize([recsys.movielens_ratings], resources=resources_for("embedded"),
                            run_config={"ops": {"movielens_ratings": {"config": {
                                "u1_base": str(tmp_path / "u1.base"),
                                "u1_test": str(tmp_path / "u1.test")}}}})
    meta = result.asset_materializations_for_node("movielens_ratings")[0].metadata
    assert meta["split"].value == "u1"
    assert meta["n_test"].value == frame.height - 700
    assert meta["n_train"].value + meta["n_val"].value == 700


def test_malformed_ratings_fail_with_line_number(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,x,2\n")
    with pytest.raises(Exception, match=r"ratings.csv:3: rating is not a number"):
        dg.materialize([recsys.movielens_ratings], resources=resources_for("embedded"),
                       run_config={"ops": {"movielens_ratings": {"config": {
                           "ratings_path": str(bad)}}}})
