"""The cross-experiment report: the latest run of every benchmark table, in one page."""

import dagster as dg

from assets_defs.resources import LabResource
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.report import latest_tables, render_report


@dg.asset(deps=["rag_benchmark", "recsys_benchmark", "nerf_benchmark"], pool="duckdb",
          description="Markdown summary of the latest run of every benchmark table in DuckDB.")
def benchmark_report(context: dg.AssetExecutionContext, lab: LabResource) -> dg.MaterializeResult:
    tables = latest_tables(lab.duckdb_path())
    page = render_report(tables)
    path = lab.root() / "reports" / "benchmarks.md"
    atomic_write_bytes(path, page.encode())
    context.log.info("Report written to %s", path)
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(page),
        "tables": len(tables),
        "path": dg.MetadataValue.path(str(path)),
    })
