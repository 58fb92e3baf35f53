"""Where the lab keeps its inputs and outputs."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """`$LAB_DATA_DIR`, or `data/` at the repository root."""
    return Path(os.environ.get("LAB_DATA_DIR") or REPO_ROOT / "data")


def duckdb_path() -> Path:
    return data_dir() / "lab.duckdb"


def lancedb_uri() -> Path:
    return data_dir() / "lancedb"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file beside `path`, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
