"""The paper library: which PDFs exist, and their chunks, rebuilt incrementally.

A document is identified by its path under the library folder (`doc_id`) and versioned by its
content hash (`doc_sha`). Chunk ids derive from both, so a changed PDF gets new chunk ids and
its old chunks disappear. Documents whose hash did not change are never parsed again:
their chunks (or their quarantine reason) are carried over from the previous build.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.rag.chunking import chunk_pages
from lab_pipelines.rag.pdf_text import UnusablePdf, parse_pdf, sha256_file

CHUNK_SCHEMA = {
    "chunk_id": pl.Utf8, "doc_id": pl.Utf8, "doc_sha": pl.Utf8, "file_name": pl.Utf8,
    "title": pl.Utf8, "doc_pages": pl.Int64, "chunk_index": pl.Int64, "page_start": pl.Int64, "page_end": pl.Int64,
    "char_start": pl.Int64, "char_end": pl.Int64, "text": pl.Utf8,
}
QUARANTINE_SCHEMA = {"doc_id": pl.Utf8, "doc_sha": pl.Utf8, "reason": pl.Utf8}
DOC_SCHEMA = {"doc_id": pl.Utf8, "path": pl.Utf8, "doc_sha": pl.Utf8, "size_bytes": pl.Int64}


def scan_library(folder: Path) -> pl.DataFrame:
    """Every `*.pdf` under `folder` (recursively) with its sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"PDF folder {folder} does not exist")
    rows = [
        {"doc_id": str(p.relative_to(folder)), "path": str(p), "doc_sha": sha256_file(p),
         "size_bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() == ".pdf"
    ]
    return pl.DataFrame(rows, schema=DOC_SCHEMA)


@dataclass
class LibraryBuild:
    chunks: pl.DataFrame
    quarantine: pl.DataFrame
    parsed_docs: int = 0
    reused_docs: int = 0
    parsed_pages: int = 0
    parse_seconds: float = 0.0

    def documents(self) -> pl.DataFrame:
        """One row per ingested document: title, pages, chunks."""
        return (self.chunks.group_by("doc_id").agg(
            pl.first("title"), pl.first("doc_pages").alias("pages"), pl.len().alias("chunks"))
            .sort("doc_id"))


def _chunk_rows(doc_id: str, doc_sha: str, pages: list[str], title: str,
                size: int, overlap: int) -> list[dict]:
    # Keyed on name and content: two copies of one PDF never share ids, an edit changes them.
    key = hashlib.sha256(f"{doc_id}\0{doc_sha}".encode()).hexdigest()[:16]
    return [
        {"chunk_id": f"{key}:{c.index:05d}", "doc_id": doc_id, "doc_sha": doc_sha,
         "file_name": Path(doc_id).name, "title": title, "doc_pages": len(pages),
         "chunk_index": c.index,
         "page_start": c.page_start, "page_end": c.page_end, "char_start": c.char_start,
         "char_end": c.char_end, "text": c.text}
        for c in chunk_pages(pages, size, overlap)
    ]


def build_library(
    docs: pl.DataFrame,
    previous_chunks: pl.DataFrame | None = None,
    previous_quarantine: pl.DataFrame | None = None,
    chunk_size: int = 1000,
    chunk_overlap: int = 200,
) -> LibraryBuild:
    """Chunks and quarantine for `docs`, parsing only documents not seen with the same hash."""
    prev_chunks = previous_chunks if previous_chunks is not None else pl.DataFrame(
        schema=CHUNK_SCHEMA)
    prev_quarantine = previous_quarantine if previous_quarantine is not None else pl.DataFrame(
        schema=QUARANTINE_SCHEMA)
    current = docs.select("doc_id", "doc_sha")
    kept_chunks = prev_chunks.join(current, on=["doc_id", "doc_sha"], how="semi")
    kept_quarantine = prev_quarantine.join(current, on=["doc_id", "doc_sha"], how="semi")
    known = pl.concat([kept_chunks.select("doc_id", "doc_sha").unique(),
                       kept_quarantine.select("doc_id", "doc_sha")])
    todo = docs.join(known, on=["doc_id", "doc_sha"], how="anti")

    rows, bad, n_pages = [], [], 0
    started = time.perf_counter()
    for doc in todo.iter_rows(named=True):
        try:
            parsed = parse_pdf(Path(doc["path"]))
        except UnusablePdf as err:
            bad.append({"doc_id": doc["doc_id"], "doc_sha": doc["doc_sha"], "reason": str(err)})
            continue
        n_pages += len(parsed.pages)
        rows += _chunk_rows(doc["doc_id"], doc["doc_sha"], parsed.pages, parsed.title,
                            chunk_size, chunk_overlap)
    elapsed = time.perf_counter() - started

    chunks = pl.concat([kept_chunks, pl.DataFrame(rows, schema=CHUNK_SCHEMA)]).sort(
        "doc_id", "chunk_index")
    quarantine = pl.concat([kept_quarantine, pl.DataFrame(bad, schema=QUARANTINE_SCHEMA)])
    return LibraryBuild(
        chunks=chunks, quarantine=quarantine.sort("doc_id"),
        parsed_docs=todo.height, reused_docs=docs.height - todo.height,
        parsed_pages=n_pages, parse_seconds=elapsed,
    )


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_parquet_or_none(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if os.path.exists(path) else None
