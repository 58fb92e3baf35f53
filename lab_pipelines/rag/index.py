"""The LanceDB `chunks` table: embeddings of the library, kept in sync incrementally.

Only chunks whose id is not yet in the table are embedded; rows of documents that changed or
were deleted are removed. Brute-force vector search is exact and fast below ~100k rows, so no
ANN index is built; a full-text index over `text` serves the keyword side of hybrid search.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
import polars as pl
import pyarrow as pa
from lancedb.index import FTS

from lab_pipelines.devices import inference_autocast
from lab_pipelines.progress import LogFn, Progress

TABLE = "chunks"
# Texts per call to the embedder: big enough to keep its batches full, small enough that
# progress moves every few seconds on a CPU.
EMBED_SLICE = 256
EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclass
class SyncStats:
    added: int
    deleted: int
    kept: int
    embed_seconds: float

    @property
    def chunks_per_second(self) -> float:
        return self.added / self.embed_seconds if self.embed_seconds > 0 else 0.0


def embed_texts(model, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Unit-normalised float32 sentence embeddings (dot product = cosine), computed in bf16
    where the device runs it natively."""
    with inference_autocast(str(model.device)):
        vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32, copy=False)


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def sync_index(db_uri: Path, chunks: pl.DataFrame, embed: EmbedFn, dim: int,
               table_name: str = TABLE, rebuild: bool = False,
               log: LogFn | None = None) -> SyncStats:
    """Make the LanceDB table hold exactly `chunks`, embedding only what is new
    (everything when `rebuild`, e.g. after the embedding model changed). Embedding progress
    goes to `log` (a tqdm bar without one)."""
    db = lancedb.connect(str(db_uri))
    exists = table_name in db.list_tables().tables
    if exists and rebuild:
        db.drop_table(table_name)
        exists = False
    existing = (pl.from_arrow(db.open_table(table_name).to_arrow().select(["chunk_id"]))
                if exists else pl.DataFrame(schema={"chunk_id": pl.Utf8}))
    stale = existing.join(chunks.select("chunk_id"), on="chunk_id", how="anti")["chunk_id"]
    new = chunks.join(existing, on="chunk_id", how="anti")

    started = time.perf_counter()
    texts = new["text"].to_list()
    parts = [np.zeros((0, dim), np.float32)]
    if texts:
        with Progress(len(texts), "embedding chunks", log, unit="chunks") as progress:
            for i in range(0, len(texts), EMBED_SLICE):
                parts.append(embed(texts[i:i + EMBED_SLICE]))
                progress.update(len(parts[-1]))
    vectors = np.concatenate(parts)
    embed_seconds = time.perf_counter() - started

    arrow = new.to_arrow().append_column(
        "vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim))
    if not exists:
        table = db.create_table(table_name, data=arrow, mode="overwrite")
    else:
        table = db.open_table(table_name)
        for i in range(0, len(stale), 500):
            table.delete(f"chunk_id IN ({_sql_list(stale[i:i + 500].to_list())})")
        if new.height:
            table.add(arrow)
    deleted = len(stale)
    if new.height or deleted or not exists:
        table.create_index("text", config=FTS(), replace=True)
        table.optimize()
    return SyncStats(added=new.height, deleted=deleted, kept=existing.height - deleted,
                     embed_seconds=embed_seconds)
