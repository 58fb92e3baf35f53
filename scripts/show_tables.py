"""Print the latest run of every benchmark table (the end of `make demo`)."""

from lab_pipelines.paths import duckdb_path
from lab_pipelines.report import load_reports, render

if __name__ == "__main__":
    print(render(*load_reports(duckdb_path())).text)
