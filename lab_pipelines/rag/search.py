"""Retrieval over the LanceDB `chunks` table: dense, full-text and hybrid (RRF-fused)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
from lancedb.rerankers import RRFReranker

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
        self._fusion = RRFReranker()

    # Each query names its score column: asking for columns without it makes lance warn on
    # every query that the column will stop being added.
    def _vector(self, query: str, k: int):
        vector = np.asarray(self.embed_query(query), dtype=np.float32)
        return (self.table.search(vector, query_type="vector").metric("cosine")
                .select([*RESULT_COLUMNS, "_distance"]).limit(k))

    def _fts(self, query: str, k: int):
        return (self.table.search(query, query_type="fts", fts_columns="text")
                .select([*RESULT_COLUMNS, "_score"]).limit(k))

    def dense(self, query: str, k: int = 5) -> list[Passage]:
        rows = self._vector(query, k).to_list()
        for r in rows:  # cosine distance -> similarity, so higher is better everywhere
            r["_distance"] = 1.0 - r["_distance"]
        return _passages(rows, "_distance")

    def keyword(self, query: str, k: int = 5) -> list[Passage]:
        return _passages(self._fts(query, k).to_list(), "_score")

    def on_page(self, file_name: str, page: int) -> list[Passage]:
        """The chunks of `file_name` that span `page`, in reading order."""
        name = file_name.replace("'", "''")
        rows = (self.table.search().where(
            f"file_name = '{name}' AND page_start <= {int(page)} AND page_end >= {int(page)}")
            .select([*RESULT_COLUMNS, "chunk_index"]).limit(10_000).to_list())
        rows.sort(key=lambda r: r["chunk_index"])
        return [Passage(**{c: r[c] for c in RESULT_COLUMNS}, score=1.0) for r in rows]

    def hybrid(self, query: str, k: int = 5) -> list[Passage]:
        """Vector and full-text results fused by reciprocal rank, with LanceDB's own RRF
        reranker (what `query_type="hybrid"` runs, minus its per-query deprecation warning)."""
        vector = self._vector(query, k).with_row_id(True).to_arrow()
        keyword = self._fts(query, k).with_row_id(True).to_arrow()
        rows = self._fusion.rerank_hybrid(query, vector, keyword).slice(0, k).to_pylist()
        return _passages(rows, "_relevance_score")
