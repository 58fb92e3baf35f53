"""Print the latest run of every benchmark table (the end of `make demo`)."""

from lab_pipelines.paths import duckdb_path
from lab_pipelines.report import latest_tables, render_report

if __name__ == "__main__":
    print(render_report(latest_tables(duckdb_path())))
