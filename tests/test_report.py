"""The benchmark report: latest runs beside published numbers, trends over runs, one
self-contained HTML page, and tables that grow new rows and columns."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import dagster as dg

from assets_defs.reports import benchmark_report
from assets_defs.resources import LabResource
from lab_pipelines import machine
from lab_pipelines.report import Section, load_reports, render
from lab_pipelines.tables import append_rows


def _rag(accuracy: float, extra: dict | None = None) -> list[dict]:
    methods = {"vanilla": 0.1, "naive": 0.5, "advanced": accuracy}
    if extra is not None:
        methods["oracle"] = 0.9
    return [{"method": m, "n_questions": 50, "accuracy": a, "hallucination_rate": 1 - a,
             "abstention_rate": 0.0, "latency_p50_s": 1.0, "latency_p95_s": 2.0,
             "retrieval_recall_at_5": 0.8, **(extra or {})} for m, a in methods.items()]


def fill(db) -> None:
    """Two RAG runs (the second with a new method and a new column), one recsys, one nerf."""
    # A row from before rows named their machine: the report falls back to the run's host.
    append_rows("rag_benchmark", [{**r, "machine": None} for r in _rag(0.611)],
                run_id="run-rag-old", db_path=db)
    append_rows("rag_benchmark", _rag(0.777, {"prefill_tokens_per_s": 123.4}),
                run_id="run-rag-new", db_path=db)
    append_rows("recsys_benchmark", [
        {"model": m, "dataset": "ml-100k", "split": "random80_seed0", "rmse": r,
         "recall_at_10": 0.05, "catalog_coverage": 0.2, "train_seconds": 3.0}
        for m, r in (("svd_tuned", 0.93), ("cmc", 0.91))], run_id="run-recsys", db_path=db)
    append_rows("nerf_benchmark", [
        {"scene": s, "method": "dnerf", "resolution": 64, "iterations": 100,
         "train_seconds": 60.0, "psnr": p, "ssim": 0.8} for s, p in (("balls", 20.0),
                                                                     ("panda", 24.0))],
        run_id="run-nerf", db_path=db)


def test_html_page_holds_latest_runs_published_numbers_trends_and_provenance(tmp_path):
    db = tmp_path / "lab.duckdb"
    fill(db)
    reports, missing = load_reports(db)
    assert [r.name for r in reports] == ["rag_benchmark", "recsys_benchmark", "nerf_benchmark"]
    assert missing == ["elevate_benchmark"]
    out = render(reports, missing, {"run-rag-old": "labbox", "run-rag-new": "elsewhere"})
    page = out.html

    rag = page[page.index("<section id='rag_benchmark'>"):]
    rag = rag[:rag.index("</section>")]
    latest = rag[:rag.index("<h3>Published vs ours")]
    assert "oracle" in latest and "prefill_tokens_per_s" in latest and "123.400" in latest
    assert "0.777" in latest and "0.611" not in latest, "the latest table mixed in an old run"
    assert "run-rag-old" in rag and "run-rag-new" in rag
    # Every run names its machine: the rows' own stamp first, the run's host for old rows.
    assert machine.describe() in latest and "elsewhere" not in rag and "labbox" in rag
    assert "unknown machine" not in page
    published = rag[rag.index("<h3>Published vs ours"):]
    assert "0.890" in published and "0.777" in published  # advanced: theirs beside ours
    nerf = page[page.index("<section id='nerf_benchmark'>"):]
    assert "30.500" in nerf and "22.000" in nerf  # ours: the mean PSNR over both scenes
    assert "balls, panda" in nerf  # ... and it says which scenes the mean is over
    assert "Not yet measured" in page and "elevate_benchmark" in page

    assert out.plots == 3 and page.count("src='data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=['\"]?(https?:|//|/)", page), "page is not self-contained"
    assert out.markdown.count("data:image/png;base64,") == 3
    assert "base64" not in out.text and "oracle" in out.text


def test_published_cmc_rows_compare_like_with_like(tmp_path):
    """The user's CMC coverage is a ranked list's: it stands beside the ranked row the lab
    ships, and ML-1M rows never dilute the ML-100K comparison."""
    db = tmp_path / "lab.duckdb"
    append_rows("recsys_benchmark", [
        {"model": m, "dataset": d, "split": "s", "rmse": r, "recall_at_10": rec,
         "catalog_coverage": cov, "train_seconds": 1.0}
        for m, d, r, rec, cov in (("cmc", "ml-100k", 0.884, 0.06, 0.151),
                                  ("cmc_discounted", "ml-100k", 0.884, 0.074, 0.203),
                                  ("cmc_discounted", "ml-1m", 0.843, 0.05, 0.388))],
        run_id="r", db_path=db)
    reports, _ = load_reports(db)
    versus = reports[0].versus_published()
    coverage = versus.filter(versus["metric"] == "catalog_coverage")
    assert dict(zip(coverage["model"], coverage["ours (latest)"])) == {
        "svd_tuned": None, "cmc_discounted": 0.203}
    assert versus.filter(versus["model"] == "cmc")["ours (latest)"].to_list() == [0.884]


def test_sections_follow_the_tables_in_html_and_markdown(tmp_path):
    fill(tmp_path / "lab.duckdb")
    reports, missing = load_reports(tmp_path / "lab.duckdb")
    out = render(reports, missing, sections=[
        Section("library_answers", "Answers from your library", "| q | a |\n|---|---|",
                "<table><tr><td>q</td></tr></table>")])
    assert "<section id='library_answers'><h2>Answers from your library</h2>" in out.html
    assert out.html.index("nerf_benchmark") < out.html.index("library_answers")
    assert "## Answers from your library" in out.markdown and "| q | a |" in out.text


def test_asset_writes_the_page_and_markdown_metadata(tmp_path):
    fill(tmp_path / "lab.duckdb")
    result = dg.materialize([benchmark_report], resources={
        "lab": LabResource(data_dir=str(tmp_path))})
    assert result.success
    page = tmp_path / "reports" / "index.html"
    meta = result.asset_materializations_for_node("benchmark_report")[0].metadata
    assert meta["html_bytes"].value == page.stat().st_size
    assert meta["plots"].value == 3 and meta["not_yet_measured"].value == "elevate_benchmark"
    assert "data:image/png;base64," in meta["report"].value
    assert not list(page.parent.glob(".*tmp*")), "a temporary file was left behind"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert today in page.read_text()
