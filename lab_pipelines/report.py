"""One Markdown page with the latest run of every benchmark table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lab_pipelines.tables import latest_run, markdown_table

BENCHMARK_TABLES = {
    "rag_benchmark": "RAG over the paper library",
    "recsys_benchmark": "CMC vs SVD on MovieLens",
    "nerf_benchmark": "D-NeRF",
    "elevate_benchmark": "ELEVATE",
}
_BOOKKEEPING = ("run_id", "created_at")


def latest_tables(db_path: Path) -> dict[str, pl.DataFrame]:
    """Latest run of each benchmark table that has rows."""
    found = {}
    for table in BENCHMARK_TABLES:
        frame = latest_run(table, db_path)
        if not frame.is_empty():
            found[table] = frame
    return found


def render_report(tables: dict[str, pl.DataFrame]) -> str:
    sections = ["# Benchmarks (latest run of each table)"]
    for table, frame in tables.items():
        run_id = frame["run_id"][0]
        when = frame["created_at"].max()
        body = frame.drop([c for c in _BOOKKEEPING if c in frame.columns])
        sections.append(f"## {BENCHMARK_TABLES[table]} (`{table}`)\n\nrun `{run_id}`, {when:%Y-%m-%d %H:%M} UTC\n\n"
                        + markdown_table(body))
    missing = [t for t in BENCHMARK_TABLES if t not in tables]
    if missing:
        sections.append("Not yet measured: " + ", ".join(f"`{t}`" for t in missing))
    return "\n\n".join(sections) + "\n"
