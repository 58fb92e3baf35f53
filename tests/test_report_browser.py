"""The report tells the truth: in a real browser every section is there and every image
decodes, and the page and `scripts/show_tables.py` name the machine of each table's run.

A small DuckDB of real rows (written through append_rows, so each names its machine), real
renders of a briefly trained D-NeRF checkpoint, the report's own render, opened from disk in
Debian's headless chromium through Playwright (as in test_ui_browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab_pipelines import machine
from lab_pipelines.nerf.gallery import report_section
from lab_pipelines.nerf.renders import render_checkpoint
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import TrainConfig, train
from lab_pipelines.paths import REPO_ROOT, atomic_write_bytes
from lab_pipelines.report import load_reports, render
from lab_pipelines.tables import append_rows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="chromium is not installed (scripts/setup.sh installs it where apt-get can)")


def _data(root: Path) -> Path:
    """Rows for three of the four tables and renders of one checkpoint; returns the DuckDB."""
    db = root / "lab.duckdb"
    append_rows("rag_benchmark", [
        {"method": m, "n_questions": 20, "accuracy": a, "hallucination_rate": 1 - a, "abstention_rate": 0.0,
         "latency_p50_s": 1.0, "latency_p95_s": 2.0, "retrieval_recall_at_5": 0.8}
        for m, a in (("vanilla", 0.1), ("naive", 0.5), ("advanced", 0.7))], run_id="run-rag", db_path=db)
    append_rows("recsys_benchmark", [
        {"model": m, "dataset": "ml-100k", "split": "random80_seed0", "rmse": r, "recall_at_10": 0.05,
         "catalog_coverage": 0.2, "train_seconds": 3.0} for m, r in (("svd_tuned", 0.93), ("cmc", 0.91))],
        run_id="run-recsys", db_path=db)
    scene = write_bouncing_balls(root / "scenes" / "bouncing_balls", size=32, n_train=8, n_val=1, n_test=2)
    trained = train(scene, root / "nerf" / "checkpoints", TrainConfig(method="fast", iterations=20, batch_rays=256))
    render_checkpoint(trained.checkpoint, root / "renders" / "bouncing_balls" / "fast", frames=4, n_views=2)
    append_rows("nerf_benchmark", [
        {"scene": "bouncing_balls", "method": "fast", "resolution": "16x16", "iterations": 20,
         "train_seconds": trained.train_seconds, "rays_per_second": trained.rays_per_second, "psnr": 18.0,
         "ssim": 0.7, "split": "test", "role": "checkpoint"}], run_id="run-nerf", db_path=db)
    return db


@needs_chromium
@pytest.mark.timeout(300)
def test_every_section_and_image_loads_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    db = _data(tmp_path)
    reports, missing = load_reports(db)
    section = report_section(db, tmp_path)
    assert section is not None
    page_html = render(reports, missing, sections=[section]).html
    index = tmp_path / "reports" / "index.html"
    atomic_write_bytes(index, page_html.encode())
    expected = [r.name for r in reports] + [section.anchor]

    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        ids = page.eval_on_selector_all("section[id]", "els => els.map(e => e.id)")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({alt: e.alt, ok: e.complete && e.naturalWidth > 0}))")
        text = page.inner_text("body")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()

    assert ids == expected, ids
    # Trend plots (one per table) and the render section's grid, orbit and disparity strips.
    assert len(images) == len(reports) + 3, images
    broken = [i["alt"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"
    assert machine.describe() in text, "the page does not say which machine the rows ran on"
    assert "unknown machine" not in text
    assert "bouncing_balls / fast: 18.00 dB" in text
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_show_tables_names_the_machine_of_every_table(tmp_path):
    db = tmp_path / "lab.duckdb"
    for run in ("old", "new"):
        append_rows("nerf_benchmark", [
            {"scene": "panda_walk", "method": "fast", "resolution": "64x64", "iterations": 2000,
             "train_seconds": 100.0, "rays_per_second": 2e4, "psnr": 31.0, "ssim": 0.98, "split": "test"}],
            run_id=f"run-{run}", db_path=db)
    append_rows("recsys_benchmark", [
        {"model": "cmc", "dataset": "ml-100k", "split": "u1", "rmse": 0.9, "recall_at_10": 0.05,
         "catalog_coverage": 0.2, "train_seconds": 3.0}], run_id="run-recsys", db_path=db)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "show_tables.py")], capture_output=True,
                          text=True, timeout=120, check=True, env={**os.environ, "LAB_DATA_DIR": str(tmp_path)})
    out = done.stdout
    assert out.count(f"on {machine.describe()}") == 2, out  # one latest-run line per table
    assert "unknown machine" not in out and "latest run `run-new`" in out
