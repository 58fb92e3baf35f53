"""The ingestion assets run for real through Dagster: quarantine, incremental re-runs."""

from __future__ import annotations

import shutil

import dagster as dg
import lancedb
import polars as pl

from assets_defs import rag
from assets_defs.resources import resources_for
from conftest import corpus_pdf, write_broken_pdfs

ASSETS = [rag.paper_pdfs, rag.pdf_chunks, rag.chunk_embeddings,
          rag.chunk_ids_unique, rag.index_matches_chunks]


def _materialize(folder) -> dict[str, dict]:
    result = dg.materialize(
        ASSETS, resources=resources_for("embedded"),
        run_config={"ops": {"paper_pdfs": {"config": {"pdf_dir": str(folder)}}}},
    )
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    return {
        ev.asset_key.to_user_string(): {k: v.value for k, v in ev.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
    }


def test_library_ingests_quarantines_and_rematerializes_incrementally(lab_data, small_library):
    broken = write_broken_pdfs(small_library)
    meta = _materialize(small_library)
    chunks_meta, index_meta = meta["pdf_chunks"], meta["chunk_embeddings"]
    assert meta["paper_pdfs"]["pdfs"] == 3 + len(broken)
    assert chunks_meta["documents"] == 3 and chunks_meta["quarantined"] == len(broken)
    for name in broken:
        assert name in chunks_meta["quarantine"]
    assert index_meta["embedded_now"] == chunks_meta["chunks"] == index_meta["rows"]

    again = _materialize(small_library)
    assert again["pdf_chunks"]["parsed_now"] == 0
    assert again["chunk_embeddings"]["embedded_now"] == 0
    assert again["chunk_embeddings"]["rows"] == chunks_meta["chunks"]

    shutil.copyfile(corpus_pdf("zoo__zoo-faq.pdf"), small_library / "zoo__zoo-design.pdf")
    (small_library / "glmnet__relax.pdf").unlink()
    changed = _materialize(small_library)
    assert changed["pdf_chunks"]["parsed_now"] == 1
    assert changed["chunk_embeddings"]["deleted"] > 0
    assert changed["chunk_embeddings"]["embedded_now"] > 0

    table = lancedb.connect(str(lab_data / "lancedb")).open_table("chunks").to_arrow()
    indexed = pl.from_arrow(table.select(["chunk_id", "doc_id"]))
    assert indexed["chunk_id"].n_unique() == indexed.height
    assert "glmnet__relax.pdf" not in set(indexed["doc_id"])
    parquet = pl.read_parquet(lab_data / "rag" / "chunks.parquet")
    assert set(parquet["chunk_id"]) == set(indexed["chunk_id"])
