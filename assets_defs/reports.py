"""The cross-experiment report: the latest run of every benchmark table against the published
numbers, with trends across runs; Markdown in the metadata, one HTML page on disk."""

import socket

import dagster as dg

from assets_defs.resources import LabResource
from assets_defs.runs import HOST_TAG
from lab_pipelines.nerf import gallery
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.rag import ask
from lab_pipelines.recsys import cold_start
from lab_pipelines.report import Section, load_reports, render

# Results that are not benchmark tables, each made by the experiment that owns it.
SECTION_MAKERS = (ask.report_section, cold_start.report_section, gallery.report_section)


def _sections(lab: LabResource) -> list[Section]:
    made = (make(lab.duckdb_path(), lab.root()) for make in SECTION_MAKERS)
    return [section for section in made if section is not None]


def _machines(instance: dg.DagsterInstance, run_ids: set[str], current_run_id: str
              ) -> dict[str, str]:
    """Run id -> the host its run worker stamped on it (runs deleted or from before the stamp
    are left out and shown as unknown). The report's own run is this host: in `make demo` its
    stamp was not yet visible to the step that writes the report, which then said "unknown"."""
    found = {}
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is not None and HOST_TAG in run.tags:
            found[run_id] = run.tags[HOST_TAG]
    if current_run_id in run_ids:
        found.setdefault(current_run_id, socket.gethostname())
    return found


@dg.asset(deps=["rag_benchmark", "elevate_benchmark", "recsys_benchmark", "nerf_benchmark",
                "library_answers", "recsys_cold_start", "dnerf_render"],
          pool="duckdb",
          description="Every benchmark table's latest run beside the published numbers, with "
                      "trend plots; Markdown here, self-contained HTML in reports/index.html.")
def benchmark_report(context: dg.AssetExecutionContext, lab: LabResource) -> dg.MaterializeResult:
    reports, missing = load_reports(lab.duckdb_path())
    run_ids = {run for report in reports for run in report.runs["run_id"].unique()}
    sections = _sections(lab)
    rendered = render(reports, missing, _machines(context.instance, run_ids, context.run.run_id),
                      sections)
    folder = lab.root() / "reports"
    atomic_write_bytes(folder / "benchmarks.md", rendered.markdown.encode())
    page = folder / "index.html"
    atomic_write_bytes(page, rendered.html.encode())
    context.log.info(f"Report written to {page} ({len(rendered.html) / 1e3:.0f} kB)")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(rendered.markdown),
        "tables": len(reports), "plots": rendered.plots,
        "sections": ", ".join(section.title for section in sections) or "-",
        "not_yet_measured": ", ".join(missing) or "-",
        "html": dg.MetadataValue.path(str(page)),
        "html_bytes": len(rendered.html.encode()),
    })
