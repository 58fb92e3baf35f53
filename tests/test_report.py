"""The benchmark report: latest runs beside published numbers, trends over runs, one
self-contained HTML page, and tables that grow new rows and columns."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import dagster as dg

from assets_defs.reports import benchmark_report
from assets_defs.resources import LabResource
from lab_pipelines.report import load_reports, render
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
    append_rows("rag_benchmark", _rag(0.611), run_id="run-rag-old", db_path=db)
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
    out = render(reports, missing, {"run-rag-new": "labbox"})
    page = out.html

    rag = page[page.index("<section id='rag_benchmark'>"):]
    rag = rag[:rag.index("</section>")]
    latest = rag[:rag.index("<h3>Published vs ours")]
    assert "oracle" in latest and "prefill_tokens_per_s" in latest and "123.400" in latest
    assert "0.777" in latest and "0.611" not in latest, "the latest table mixed in an old run"
    assert "labbox" in rag and "run-rag-old" in rag and "run-rag-new" in rag
    published = rag[rag.index("<h3>Published vs ours"):]
    assert "0.890" in published and "0.777" in published  # advanced: theirs beside ours
    nerf = page[page.index("<section id='nerf_benchmark'>"):]
    assert "30.500" in nerf and "22.000" in nerf  # ours: the mean PSNR over both scenes
    assert "Not yet measured" in page and "elevate_benchmark" in page

    assert out.plots == 3 and page.count("src='data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=['\"]?(https?:|//|/)", page), "page is not self-contained"
    assert out.markdown.count("data:image/png;base64,") == 3
    assert "base64" not in out.text and "oracle" in out.text


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
