"""The DuckDB writer: append-only, transactional, idempotent per run, safe across processes."""

from __future__ import annotations

import multiprocessing as mp

import duckdb
import polars as pl
import pytest

from lab_pipelines import machine
from lab_pipelines.tables import append_rows, latest_run, markdown_table, read_table


def test_first_write_creates_table_with_run_id_and_created_at(tmp_path):
    db = tmp_path / "lab.duckdb"
    n = append_rows("demo", [{"method": "a", "score": 0.5}, {"method": "b", "score": 0.7}],
                    run_id="r1", db_path=db)
    assert n == 2
    frame = read_table("demo", db)
    assert set(frame.columns) == {"method", "score", "run_id", "created_at", "machine"}
    assert frame["machine"].to_list() == [machine.describe()] * 2
    assert "cores" in machine.describe()
    assert frame["run_id"].to_list() == ["r1", "r1"]
    assert frame["created_at"].null_count() == 0


def test_appends_across_runs_replaces_within_a_run_and_adds_new_columns(tmp_path):
    db = tmp_path / "lab.duckdb"
    append_rows("demo", [{"method": "a", "score": 0.5}], run_id="r1", db_path=db)
    append_rows("demo", [{"method": "a", "score": 0.6}], run_id="r2", db_path=db)
    append_rows("demo", [{"method": "a", "score": 0.9, "extra": 3}], run_id="r2", db_path=db)
    frame = read_table("demo", db).sort("run_id")
    assert frame["score"].to_list() == [0.5, 0.9]
    assert frame["extra"].to_list() == [None, 3]
    assert latest_run("demo", db)["run_id"].to_list() == ["r2"]


def test_missing_required_column_writes_nothing(tmp_path):
    db = tmp_path / "lab.duckdb"
    with pytest.raises(ValueError, match="required columns"):
        append_rows("demo", [{"method": "a"}], run_id="r1", db_path=db, required=["score"])
    assert read_table("demo", db).is_empty()


def test_failed_insert_rolls_back_the_whole_write(tmp_path):
    db = tmp_path / "lab.duckdb"
    append_rows("demo", [{"method": "a", "score": 0.5}], run_id="r1", db_path=db)
    with pytest.raises(duckdb.Error):
        # A string where the table holds doubles fails inside the transaction, after the
        # DELETE of r1's rows: the rollback must bring them back.
        append_rows("demo", [{"method": "b", "score": "not a number"}], run_id="r1", db_path=db)
    assert read_table("demo", db)["score"].to_list() == [0.5]


def _writer(db_path: str, run_id: str) -> None:
    for i in range(20):
        append_rows("race", [{"i": i, "w": run_id}], run_id=f"{run_id}-{i}", db_path=db_path)


def test_concurrent_processes_never_lose_rows(tmp_path):
    db = str(tmp_path / "lab.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, name)) for name in ("p", "q", "r")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    frame = read_table("race", db)
    assert frame.height == 60
    assert frame.group_by("w").len().sort("w")["len"].to_list() == [20, 20, 20]


def test_markdown_table_formats_floats():
    md = markdown_table(pl.DataFrame({"m": ["x"], "v": [0.12345]}))
    assert md.splitlines() == ["| m | v |", "|---|---|", "| x | 0.123 |"]
