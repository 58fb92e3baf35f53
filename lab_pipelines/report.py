"""The benchmark report: the latest run of every benchmark table beside the user's published
numbers, and each headline metric's trend across all runs.

Two renderings of the same content: Markdown with inline plots (Dagster metadata) and one
self-contained HTML page (images inlined as base64, so the file can be mailed or opened
offline). Tables are rendered from whatever columns they have, so a new method row or a new
column shows up without a change here.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from lab_pipelines.tables import image_markdown, markdown_table, read_table

_BOOKKEEPING = ("run_id", "created_at", "machine")


@dataclass(frozen=True)
class Benchmark:
    """How to read one benchmark table: which columns name a series, which metrics are the
    headline, and the published numbers to hold them against (keyed by `anchor_by`'s value)."""

    title: str
    series: tuple[str, ...]
    headline: tuple[str, ...]
    anchor_by: str
    anchors: dict[str, dict[str, float]] = field(default_factory=dict)
    anchor_source: str = ""
    # Only rows like the published setting are held against it (e.g. the same dataset).
    anchor_where: dict[str, str] = field(default_factory=dict)


BENCHMARKS: dict[str, Benchmark] = {
    "rag_benchmark": Benchmark(
        "RAG over the paper library", ("method",),
        ("accuracy", "hallucination_rate", "latency_p50_s"), "method",
        {"vanilla": {"accuracy": 0.12, "hallucination_rate": 0.64},
         "naive": {"accuracy": 0.72, "hallucination_rate": 0.18},
         "advanced": {"accuracy": 0.89, "hallucination_rate": 0.04}},
        "the user's RAG table"),
    "elevate_benchmark": Benchmark(
        "ELEVATE (retrieve-verify-refine)", ("method",),
        ("correct_claims", "hallucinated_claims", "avg_latency_s"), "method",
        {"standard_rag": {"correct_claims": 0.76, "hallucinated_claims": 0.24,
                          "avg_latency_s": 1.8},
         "elevate": {"correct_claims": 0.92, "hallucinated_claims": 0.08, "avg_latency_s": 3.2}},
        "the user's ELEVATE table"),
    "recsys_benchmark": Benchmark(
        "CMC vs SVD on MovieLens", ("model", "dataset", "split"),
        ("rmse", "recall_at_10", "catalog_coverage"), "model",
        # The user's "SVD" is the tuned biased MF; their split is ML-100K u1. Their CMC RMSE
        # is the expected rating's; its top-10 figures are the ranked lists the lab ships
        # (cmc_discounted), not the expected-rating order.
        {"svd_tuned": {"rmse": 0.892, "recall_at_10": 0.052, "catalog_coverage": 0.12},
         "cmc": {"rmse": 0.845},
         "cmc_discounted": {"recall_at_10": 0.078, "catalog_coverage": 0.24}},
        "the user's write-up (ML-100K u1)", {"dataset": "ml-100k"}),
    "nerf_benchmark": Benchmark(
        "D-NeRF", ("scene", "method"), ("psnr", "ssim", "train_seconds"), "method",
        {"dnerf": {"psnr": 30.50, "ssim": 0.95, "train_seconds": 20 * 3600.0}},
        "D-NeRF (CVPR'21): 8 synthetic scenes at 400x400, one GPU"),
}


@dataclass(frozen=True)
class Section:
    """A part of the report that is not a benchmark table (answers, plots, renders), made by
    the experiment that owns it; `anchor` is its HTML id."""

    anchor: str
    title: str
    markdown: str
    html: str


@dataclass
class TableReport:
    """One benchmark table: all its runs, and what the report says about them."""

    name: str
    spec: Benchmark
    runs: pl.DataFrame  # every row of every run

    @property
    def latest(self) -> pl.DataFrame:
        last = self.runs.sort("created_at").get_column("run_id")[-1]
        return self.runs.filter(pl.col("run_id") == last)

    @property
    def run_id(self) -> str:
        return self.latest["run_id"][0]

    @property
    def when(self) -> datetime:
        return self.latest["created_at"].max()

    def machines(self) -> dict[str, str]:
        """Run id -> the machine its rows were measured on (rows from before the column have
        none)."""
        if "machine" not in self.runs.columns:
            return {}
        found = self.runs.select("run_id", "machine").drop_nulls().unique("run_id")
        return dict(found.iter_rows())

    def run_order(self) -> pl.DataFrame:
        """One row per run, oldest first: run_id and when it was written."""
        return (self.runs.group_by("run_id").agg(pl.col("created_at").max())
                .sort("created_at"))

    def versus_published(self) -> pl.DataFrame:
        """Published headline numbers beside the latest run's, averaged over the rows that
        share the anchor key (e.g. over scenes), which `over` names."""
        latest = self.latest
        for column, value in self.spec.anchor_where.items():
            if column in latest.columns:
                latest = latest.filter(pl.col(column) == value)
        others = [c for c in self.spec.series if c != self.spec.anchor_by and c in latest.columns]
        rows = []
        for key, metrics in self.spec.anchors.items():
            mine = (latest.filter(pl.col(self.spec.anchor_by) == key)
                    if self.spec.anchor_by in latest.columns else latest.clear())
            over = ", ".join(sorted({_series_label(r, others) for r in
                                     mine.select(others).iter_rows(named=True)})) if others else ""
            for metric, published in metrics.items():
                ours = (mine[metric].mean() if metric in mine.columns and not mine.is_empty()
                        else None)
                rows.append({self.spec.anchor_by: key, "metric": metric,
                             "published": published, "ours (latest)": ours,
                             "over": over or "-"})
        return pl.DataFrame(rows, schema={self.spec.anchor_by: pl.Utf8, "metric": pl.Utf8,
                                          "published": pl.Float64,
                                          "ours (latest)": pl.Float64, "over": pl.Utf8})


def load_reports(db_path: Path) -> tuple[list[TableReport], list[str]]:
    """Every benchmark table with rows, and the names of those not measured yet."""
    found, missing = [], []
    for name, spec in BENCHMARKS.items():
        frame = read_table(name, db_path)
        if frame.is_empty():
            missing.append(name)
        else:
            found.append(TableReport(name, spec, frame))
    return found, missing


def _series_label(row: dict, columns: list[str]) -> str:
    return " / ".join(str(row[c]) for c in columns)


def trend_png(report: TableReport) -> bytes | None:
    """Each headline metric across all runs, one line per series, published numbers dashed."""
    metrics = [m for m in report.spec.headline if m in report.runs.columns]
    if not metrics:
        return None
    order = report.run_order()
    position = {run: i for i, run in enumerate(order["run_id"])}
    ticks = [f"{when:%m-%d %H:%M}\n{run[:8]}" for run, when in order.iter_rows()]
    series = [c for c in report.spec.series if c in report.runs.columns]
    # One colour per series in every panel, so the first panel's legend reads for all.
    labels = sorted({_series_label(row, series)
                     for row in report.runs.select(series).unique().iter_rows(named=True)})
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        per_run = (report.runs.group_by([*series, "run_id"]).agg(pl.col(metric).mean())
                   .sort("run_id"))
        for key, rows in per_run.group_by(series, maintain_order=True):
            label = _series_label(dict(zip(series, key)), series)
            points = sorted((position[r], v) for r, v in zip(rows["run_id"], rows[metric])
                            if v is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=label, color=colour[label])
        for key, published in report.spec.anchors.items():
            if metric in published:
                ax.axhline(published[metric], linestyle="--", linewidth=1, color="grey")
                ax.annotate(f"{key} (published)", (0, published[metric]), fontsize=7,
                            color="grey", xytext=(0, 2), textcoords="offset points")
        ax.set_title(metric)
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(report.spec.title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _machine(report: TableReport, run: str, hosts: Mapping[str, str]) -> str:
    """What the run's rows say they ran on; else the host its run worker stamped."""
    return report.machines().get(run) or hosts.get(run, "unknown machine")


def _provenance(report: TableReport, hosts: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(run id, UTC date, machine) for every run of the table, oldest first."""
    return [(run, f"{when:%Y-%m-%d %H:%M} UTC", _machine(report, run, hosts))
            for run, when in report.run_order().iter_rows()]


def _body(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop([c for c in _BOOKKEEPING if c in frame.columns])


@dataclass
class RenderedReport:
    markdown: str  # with the trend plots inline, for Dagster metadata
    text: str  # the same without images, for a terminal
    html: str
    plots: int


def render(reports: list[TableReport], missing: list[str],
           machines: Mapping[str, str] | None = None,
           sections: Sequence[Section] = ()) -> RenderedReport:
    """Markdown (for Dagster metadata) and a self-contained HTML page with the same content.
    `machines` maps a run id to the host it ran on, for rows that do not name their machine;
    `sections` follow the benchmark tables."""
    machines = machines or {}
    md = ["# Benchmarks: latest run of each table, against published numbers"]
    images: set[int] = set()  # positions in `md` left out of the terminal text
    page = []
    plots = 0
    for report in reports:
        run, when = report.run_id, f"{report.when:%Y-%m-%d %H:%M} UTC"
        machine = _machine(report, run, machines)
        versus = report.versus_published()
        png = trend_png(report)
        plots += png is not None
        history = _provenance(report, machines)
        md.append(f"## {report.spec.title} (`{report.name}`)\n\nlatest run `{run}`, {when}, on "
                  f"{machine}\n\n{markdown_table(_body(report.latest))}")
        if not versus.is_empty():
            md.append(f"Published ({report.spec.anchor_source}) vs ours:\n\n"
                      f"{markdown_table(versus)}")
        if png is not None:
            images.add(len(md))
            md.append(image_markdown(png, f"{report.name} trend") + "\n\nRuns: " + "; ".join(
                f"`{r[:8]}` {d} on {m}" for r, d, m in history))
        page.append(_html_section(report, run, when, machine, versus, png, history))
    for section in sections:
        if "](data:" in section.markdown:  # inline images are unreadable in a terminal
            images.add(len(md))
        md.append(f"## {section.title}\n\n{section.markdown}")
        page.append(f"<section id='{html.escape(section.anchor)}'><h2>"
                    f"{html.escape(section.title)}</h2>{section.html}</section>")
    if missing:
        md.append("Not yet measured: " + ", ".join(f"`{t}`" for t in missing))
    text = [chunk for i, chunk in enumerate(md) if i not in images]
    return RenderedReport("\n\n".join(md) + "\n", "\n\n".join(text) + "\n",
                          _html_page(page, missing), plots)


def html_table(frame: pl.DataFrame) -> str:
    """A frame as an HTML table with the report's number formatting, for sections too."""
    def cell(value: object) -> str:
        if value is None:
            return "<td class=na>-</td>"
        if isinstance(value, float):
            return f"<td class=num>{value:.3f}</td>"
        return f"<td>{html.escape(str(value))}</td>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _html_section(report: TableReport, run: str, when: str, machine: str,
                  versus: pl.DataFrame, png: bytes | None,
                  history: list[tuple[str, str, str]]) -> str:
    esc = html.escape
    heading = (f"<section id='{esc(report.name)}'><h2>{esc(report.spec.title)} "
               f"<code>{esc(report.name)}</code></h2>")
    latest = (f"<p class=prov>latest run <code>{esc(run)}</code> &middot; {esc(when)} &middot; "
              f"{esc(machine)}</p><div class=side><div><h3>Latest run</h3>"
              f"{html_table(_body(report.latest))}</div>")
    parts = [heading, latest]
    if not versus.is_empty():
        parts.append(f"<div><h3>Published vs ours</h3>{html_table(versus)}"
                     f"<p class=src>{esc(report.spec.anchor_source)}</p></div>")
    parts.append("</div>")
    if png is not None:
        runs = "".join(f"<li><code>{esc(r)}</code> {esc(d)} &middot; {esc(m)}</li>"
                       for r, d, m in history)
        parts.append(f"<figure><img alt='{esc(report.name)} trend' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                     f"<figcaption>Headline metrics across {len(history)} run(s); dashed: "
                     f"published. Runs (oldest first):<ul>{runs}</ul></figcaption></figure>")
    return "".join(parts) + "</section>"


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.na{color:#999;text-align:center}.side{display:flex;gap:2em;flex-wrap:wrap;align-items:start}
.prov,.src,figcaption{color:#555;font-size:12px}img{max-width:100%}section{margin-bottom:2.5em}
code{background:#f6f6f6;padding:0 3px}"""


def _html_page(sections: list[str], missing: list[str]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    todo = ""
    if missing:
        items = "".join(f"<li>{html.escape(BENCHMARKS[t].title)} <code>{t}</code></li>"
                        for t in missing)
        todo = f"<section><h2>Not yet measured</h2><ul>{items}</ul></section>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Lab benchmarks</title>"
            f"<style>{_STYLE}</style></head><body><h1>Lab benchmarks</h1>"
            f"<p class=prov>generated {generated}</p>{''.join(sections)}{todo}</body></html>\n")
