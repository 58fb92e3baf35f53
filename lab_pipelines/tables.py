"""The one writer for benchmark tables in DuckDB.

Tables are append-only across runs; every row carries `run_id` and `created_at`. A retried
step replaces its own run's rows instead of duplicating them. Writes happen in one transaction
under an exclusive file lock, so two processes (two Dagster runs, or a run and a notebook)
never collide on DuckDB's single-writer file lock.
"""

from __future__ import annotations

import base64
import fcntl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from lab_pipelines import machine
from lab_pipelines.paths import duckdb_path

_DUCKDB_TYPES = {
    pl.Int8: "BIGINT", pl.Int16: "BIGINT", pl.Int32: "BIGINT", pl.Int64: "BIGINT",
    pl.UInt8: "BIGINT", pl.UInt16: "BIGINT", pl.UInt32: "BIGINT", pl.UInt64: "BIGINT",
    pl.Float32: "DOUBLE", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN", pl.Utf8: "VARCHAR",
    pl.Datetime: "TIMESTAMPTZ",
}


@contextmanager
def locked_connection(db_path: Path | None = None, timeout_s: float = 120.0) -> Iterator[
        duckdb.DuckDBPyConnection]:
    """An exclusive, short-lived connection to the lab database."""
    path = Path(db_path or duckdb_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout_s:.0f} s") from None
                time.sleep(0.1)
        con = duckdb.connect(str(path))
        try:
            yield con
        finally:
            con.close()
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sql_type(dtype: pl.DataType) -> str:
    for polars_type, sql in _DUCKDB_TYPES.items():
        if dtype == polars_type or isinstance(dtype, polars_type):
            return sql
    return "VARCHAR"


def append_rows(
    table: str,
    rows: pl.DataFrame | Sequence[dict],
    run_id: str,
    db_path: Path | None = None,
    required: Sequence[str] = (),
    replace_matching: Sequence[str] = (),
) -> int:
    """Append `rows` to `table` stamped with `run_id`, `created_at` and `machine` (CPU model,
    cores, bf16 flags, GPU: lab_pipelines.machine.describe); return the row count.

    Creates the table on first use and adds columns that later rows introduce. Rows already
    written by the same `run_id` are replaced, so a retried step does not duplicate them; with
    `replace_matching`, only those that also agree with an incoming row on these columns (so
    several steps of one run can add to the same table).
    """
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows))
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: rows lack required columns {missing}")
    if not table.replace("_", "").isalnum():
        raise ValueError(f"Bad table name {table!r}")
    frame = frame.with_columns(
        pl.lit(run_id).alias("run_id"),
        pl.lit(datetime.now(timezone.utc)).alias("created_at"),
    )
    if "machine" not in frame.columns:
        frame = frame.with_columns(pl.lit(machine.describe()).alias("machine"))
    with locked_connection(db_path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            columns = {name: _sql_type(dtype) for name, dtype in frame.schema.items()}
            ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({ddl})')
            existing = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                [table]).fetchall()}
            for c, t in columns.items():
                if c not in existing:
                    con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{c}" {t}')
            con.register("incoming", frame.to_arrow())
            same = " AND ".join(f'i."{c}" = t."{c}"' for c in replace_matching) or "TRUE"
            con.execute(f'DELETE FROM "{table}" t WHERE run_id = ? AND EXISTS '
                        f'(SELECT 1 FROM incoming i WHERE {same})', [run_id])
            names = ", ".join(f'"{c}"' for c in frame.columns)
            con.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM incoming')
            con.unregister("incoming")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return frame.height


def read_table(table: str, db_path: Path | None = None) -> pl.DataFrame:
    """The whole table as a polars frame (empty frame if it does not exist yet)."""
    with locked_connection(db_path) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()[0]
        if not found:
            return pl.DataFrame()
        return pl.from_arrow(con.execute(f'SELECT * FROM "{table}"').arrow())


def latest_run(table: str, db_path: Path | None = None) -> pl.DataFrame:
    """Rows of the most recent run written to `table`."""
    frame = read_table(table, db_path)
    if frame.is_empty():
        return frame
    last = frame.sort("created_at").get_column("run_id").to_list()[-1]
    return frame.filter(pl.col("run_id") == last)


def image_markdown(payload: bytes, alt: str, mime: str = "image/png") -> str:
    """An inline image (PNG, GIF) as Markdown, for Dagster metadata."""
    return f"![{alt}](data:{mime};base64,{base64.b64encode(payload).decode()})"


def markdown_table(frame: pl.DataFrame, float_digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table, for Dagster metadata and READMEs."""
    if frame.is_empty():
        return "_(no rows)_"
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.{float_digits}f}"
        return str(v)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])
