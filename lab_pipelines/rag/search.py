"""Retrieval over the LanceDB `chunks` table: dense, full-text and hybrid (RRF-fused)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np

from lab_pipelines.rag.index import TABLE

RESULT_COLUMNS = ["chunk_id", "doc_id", "file_name", "title", "page_start", "page_end", "text"]


@dataclass(frozen=True)
class Passage:
    chunk_id: str
    doc_id: str
    file_name: str
    title: str
    page_start: int
    page_end: int
    text: str
    score: float

    @property
    def citation(self) -> str:
        pages = (f"p. {self.page_start}" if self.page_start == self.page_end
                 else f"pp. {self.page_start}-{self.page_end}")
        return f"{self.file_name}, {pages}"


def _passages(rows: list[dict], score_key: str) -> list[Passage]:
    return [Passage(**{c: r[c] for c in RESULT_COLUMNS}, score=float(r[score_key])) for r in rows]


class PaperSearch:
    """Search the library. `embed_query` maps a string to a unit-norm vector."""

    def __init__(self, db_uri: Path, embed_query, table_name: str = TABLE) -> None:
        self.table = lancedb.connect(str(db_uri)).open_table(table_name)
        self.embed_query = embed_query

    def dense(self, query: str, k: int = 5) -> list[Passage]:
        vector = np.asarray(self.embed_query(query), dtype=np.float32)
        rows = (self.table.search(vector, query_type="vector").metric("cosine")
                .select(RESULT_COLUMNS).limit(k).to_list())
        for r in rows:  # cosine distance -> similarity, so higher is better everywhere
            r["_distance"] = 1.0 - r["_distance"]
        return _passages(rows, "_distance")

    def keyword(self, query: str, k: int = 5) -> list[Passage]:
        # Naming `_score` keeps it in the result and silences lance's auto-projection warning.
        rows = (self.table.search(query, query_type="fts", fts_columns="text")
                .select([*RESULT_COLUMNS, "_score"]).limit(k).to_list())
        return _passages(rows, "_score")

    def hybrid(self, query: str, k: int = 5) -> list[Passage]:
        """Vector and full-text results fused by reciprocal rank (LanceDB's default reranker)."""
        vector = np.asarray(self.embed_query(query), dtype=np.float32)
        rows = (self.table.search(query_type="hybrid", fts_columns="text").vector(vector)
                .text(query).select(RESULT_COLUMNS).limit(k).to_list())
        return _passages(rows, "_relevance_score")
