"""The paper library: PDFs -> cleaned, chunked text -> embeddings in LanceDB.

Each asset re-uses the previous build: an unchanged PDF is neither re-parsed nor re-embedded.
"""

import json
import time
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import torch
from pydantic import Field

from assets_defs.resources import CardResource, LabResource, ModelRegistry
from lab_pipelines.devices import configure_torch_for
from lab_pipelines.models import load_embedder
from lab_pipelines.rag.index import TABLE, embed_texts, sync_index
from lab_pipelines.rag.library import (
    build_library, read_parquet_or_none, scan_library, write_parquet_atomic,
)
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.tables import markdown_table


class PaperLibraryConfig(dg.Config):
    pdf_dir: str = Field(default="", description="Folder of PDFs; empty means <data>/papers.")


class ChunkingConfig(dg.Config):
    chunk_size: int = 1000
    chunk_overlap: int = 200


def rag_dir(lab: LabResource) -> Path:
    return lab.root() / "rag"


@dg.asset(description="The PDFs in the library folder, each with its sha256.")
def paper_pdfs(context: dg.AssetExecutionContext, config: PaperLibraryConfig,
               lab: LabResource) -> dg.MaterializeResult:
    folder = Path(config.pdf_dir) if config.pdf_dir else lab.root() / "papers"
    docs = scan_library(folder)
    write_parquet_atomic(docs, rag_dir(lab) / "library.parquet")
    context.log.info("%d PDFs in %s", docs.height, folder)
    return dg.MaterializeResult(metadata={
        "folder": dg.MetadataValue.path(str(folder)),
        "pdfs": docs.height,
        "total_mb": round(docs["size_bytes"].sum() / 2**20, 1) if docs.height else 0.0,
        "files": dg.MetadataValue.md(markdown_table(
            docs.select("doc_id", pl.col("doc_sha").str.slice(0, 12), "size_bytes"))),
    })


@dg.asset(deps=[paper_pdfs],
          description="pypdf text per page, cleaned and chunked (1000/200) with page spans.")
def pdf_chunks(context: dg.AssetExecutionContext, config: ChunkingConfig,
               lab: LabResource) -> dg.MaterializeResult:
    out = rag_dir(lab)
    docs = pl.read_parquet(out / "library.parquet")
    params_file = out / "chunking.json"
    params = {"chunk_size": config.chunk_size, "chunk_overlap": config.chunk_overlap}
    same_params = params_file.exists() and json.loads(params_file.read_text()) == params
    build = build_library(
        docs,
        previous_chunks=read_parquet_or_none(out / "chunks.parquet") if same_params else None,
        previous_quarantine=read_parquet_or_none(out / "quarantine.parquet"),
        chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap,
    )
    write_parquet_atomic(build.chunks, out / "chunks.parquet")
    write_parquet_atomic(build.quarantine, out / "quarantine.parquet")
    atomic_write_bytes(params_file, json.dumps(params).encode())
    for row in build.quarantine.iter_rows(named=True):
        context.log.warning("Quarantined %s: %s", row["doc_id"], row["reason"])

    documents = build.documents()
    preview = build.chunks.head(8).select(
        "file_name", "page_start", "page_end",
        pl.col("text").str.slice(0, 90).str.replace_all(r"[\n|]", " ").alias("text"))
    seconds = max(build.parse_seconds, 1e-9)
    return dg.MaterializeResult(metadata={
        "documents": documents.height,
        "pages": int(documents["pages"].sum()) if documents.height else 0,
        "chunks": build.chunks.height,
        "quarantined": build.quarantine.height,
        "parsed_now": build.parsed_docs,
        "reused_unchanged": build.reused_docs,
        "pages_per_s": round(build.parsed_pages / seconds, 1) if build.parsed_pages else 0.0,
        "chunks_per_s": (round(build.chunks.height / seconds, 1) if build.parsed_docs else 0.0),
        "quarantine": dg.MetadataValue.md(markdown_table(build.quarantine.select("doc_id", "reason"))),
        "documents_table": dg.MetadataValue.md(markdown_table(documents)),
        "preview": dg.MetadataValue.md(markdown_table(preview)),
        "path": dg.MetadataValue.path(str(out / "chunks.parquet")),
    })


@dg.asset(deps=[pdf_chunks], pool="gpu1",
          description="Sentence embeddings of every chunk in the LanceDB table `chunks` "
                      "(with a full-text index for hybrid search). Only new chunks are embedded.")
def chunk_embeddings(context: dg.AssetExecutionContext, lab: LabResource, gpu1: CardResource,
                     models: ModelRegistry) -> dg.MaterializeResult:
    device = gpu1.resolve()
    configure_torch_for(device)
    chunks = pl.read_parquet(rag_dir(lab) / "chunks.parquet")
    loaded = {}

    def model():  # loaded only when something needs embedding
        if "model" not in loaded:
            loaded["model"] = load_embedder(models.embedder, device)
        return loaded["model"]

    def embed(texts):
        context.log.info("Embedding %d chunks on %s", len(texts), device)
        return embed_texts(model(), texts)

    # Vectors from another embedder are not comparable: switching models rebuilds the table.
    spec_file = rag_dir(lab) / "index.json"
    same_embedder = spec_file.exists() and json.loads(spec_file.read_text()) == {
        "embedder": models.embedder}
    started = time.perf_counter()
    dim = (_embedding_dim(lab) if same_embedder else None) or model().get_embedding_dimension()
    stats = sync_index(lab.lancedb_uri(), chunks, embed, dim, rebuild=not same_embedder,
                       log=context.log.info)
    atomic_write_bytes(spec_file, json.dumps({"embedder": models.embedder}).encode())
    context.log.info("LanceDB sync: %s", stats)
    return dg.MaterializeResult(metadata={
        "rows": stats.kept + stats.added,
        "embedded_now": stats.added,
        "deleted": stats.deleted,
        "embed_chunks_per_s": round(stats.chunks_per_second, 1),
        "embed_seconds": round(stats.embed_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "device": device,
        "embedder": models.embedder,
        "torch_threads": torch.get_num_threads(),
        "lancedb": dg.MetadataValue.path(str(lab.lancedb_uri())),
    })


def _embedding_dim(lab: LabResource) -> int | None:
    """The vector width of an existing table, so an unchanged library loads no model."""
    db = lancedb.connect(str(lab.lancedb_uri()))
    if TABLE not in db.list_tables().tables:
        return None
    return db.open_table(TABLE).schema.field("vector").type.list_size


@dg.asset_check(asset=pdf_chunks, description="Chunk ids are unique and every chunk has text.")
def chunk_ids_unique(lab: LabResource) -> dg.AssetCheckResult:
    chunks = pl.read_parquet(rag_dir(lab) / "chunks.parquet")
    dupes = chunks.height - chunks["chunk_id"].n_unique()
    empty = chunks.filter(pl.col("text").str.len_chars() == 0).height
    return dg.AssetCheckResult(passed=dupes == 0 and empty == 0,
                               metadata={"duplicate_ids": dupes, "empty_chunks": empty})


@dg.asset_check(asset=chunk_embeddings,
                description="The LanceDB table holds exactly the chunks of the Parquet file.")
def index_matches_chunks(lab: LabResource) -> dg.AssetCheckResult:
    chunks = pl.read_parquet(rag_dir(lab) / "chunks.parquet", columns=["chunk_id"])
    table = lancedb.connect(str(lab.lancedb_uri())).open_table(TABLE)
    indexed = pl.from_arrow(table.to_arrow().select(["chunk_id"]))
    missing = chunks.join(indexed, on="chunk_id", how="anti").height
    extra = indexed.join(chunks, on="chunk_id", how="anti").height
    dupes = indexed.height - indexed["chunk_id"].n_unique()
    return dg.AssetCheckResult(passed=missing == extra == dupes == 0,
                               metadata={"missing": missing, "extra": extra, "duplicates": dupes,
                                         "rows": indexed.height})
