"""RAG answering assets: the generator cache, the corpus-trained re-ranker, the benchmark."""

import io
import json
import time
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from assets_defs.resources import CardResource, LabResource, ModelRegistry
from lab_pipelines import models as model_registry
from lab_pipelines.paths import REPO_ROOT, atomic_write_bytes
from lab_pipelines.rag import ask, benchmark, langchain_peer, rerank
from lab_pipelines.rag.generate import Generator
from lab_pipelines.rag.index import embed_texts
from lab_pipelines.rag.qa import eval_split, load_qa
from lab_pipelines.rag.search import PaperSearch
from lab_pipelines.tables import append_rows, image_markdown, markdown_table

BENCHMARK_TABLE = "rag_benchmark"
REQUIRED_COLUMNS = ("method", "n_questions", "accuracy", "hallucination_rate", "abstention_rate",
                    "latency_p50_s", "latency_p95_s", "retrieval_recall_at_5")


def _models_dir(lab: LabResource) -> Path:
    return lab.root() / "models"


@dg.asset(pool="gpu0")
def generator_model(context: dg.AssetExecutionContext, lab: LabResource,
                    models: ModelRegistry) -> dg.MaterializeResult:
    """A packaged GGUF reader (Qwen2.5-Coder-0.5B-Instruct by default, its joined bytes
    checked against the pinned SHA-256) dequantised once into a safetensors folder.

    Any other generator spec (a local folder or a cached hub id) is checked to be on disk.
    """
    started = time.perf_counter()
    if model_registry.packaged_generator_name(models.generator):
        folder = model_registry.cache_packaged_generator(models.generator, _models_dir(lab))
    else:
        folder = model_registry.resolve_model_dir(models.generator)
    context.log.info(f"generator {models.generator} at {folder}")
    return dg.MaterializeResult(metadata={
        "spec": models.generator, "path": str(folder),
        "seconds": round(time.perf_counter() - started, 1)})


class RerankerModelConfig(dg.Config):
    n_queries: int = rerank.RerankerConfig.n_queries
    n_layers: int = rerank.RerankerConfig.n_layers
    max_length: int = rerank.RerankerConfig.max_length
    n_negatives: int = rerank.RerankerConfig.n_negatives
    epochs: int = rerank.RerankerConfig.epochs
    seed: int = rerank.RerankerConfig.seed


@dg.asset(pool="gpu1", deps=["chunk_embeddings"])
def reranker_model(context: dg.AssetExecutionContext, config: RerankerModelConfig,
                   gpu1: CardResource, lab: LabResource,
                   models: ModelRegistry) -> dg.MaterializeResult:
    """A MiniLM cross-encoder fine-tuned on inverse-cloze pseudo-queries from the library,
    with hard negatives from dense retrieval. Skipped when `models.reranker` names one."""
    if models.reranker:
        folder = model_registry.resolve_model_dir(models.reranker)
        context.log.info(f"using configured re-ranker {models.reranker}; nothing to train")
        return dg.MaterializeResult(metadata={"spec": models.reranker, "path": str(folder)})
    device = gpu1.resolve()
    settings = rerank.RerankerConfig(
        n_queries=config.n_queries, n_layers=config.n_layers, max_length=config.max_length,
        n_negatives=config.n_negatives, epochs=config.epochs, seed=config.seed)
    embedder = model_registry.load_embedder(models.embedder, device)
    train, heldout = rerank.build_training_set(
        lab.lancedb_uri(), lambda texts: embed_texts(embedder, texts), settings)
    context.log.info(f"{len(train)} training and {len(heldout)} held-out pseudo-query groups")
    cross_encoder, report = rerank.train_reranker(train, heldout, settings, device,
                                                  log=context.log.info)
    retriever_top1 = rerank.retriever_accuracy(heldout, lambda texts: embed_texts(embedder, texts))
    target = rerank.save_reranker(cross_encoder, _models_dir(lab) / ask.RERANKER_DIR)
    quality = {"heldout_top1_before": report.heldout_accuracy_before,
               "heldout_top1_after": report.heldout_accuracy_after,
               "heldout_top1_retriever": retriever_top1}
    atomic_write_bytes(_quality_file(lab), json.dumps(quality).encode())
    return dg.MaterializeResult(metadata={
        "path": str(target), "device": device, "train_groups": report.n_train,
        "heldout_groups": report.n_heldout, "steps": report.steps,
        "train_seconds": round(report.train_seconds, 1), **quality, "chance": report.chance})


def _quality_file(lab: LabResource) -> Path:
    return _models_dir(lab) / ask.RERANKER_QUALITY


def gated_reranker(lab: LabResource, models: ModelRegistry, device: str,
                   log) -> tuple[rerank.Reranker | None, str]:
    """The re-ranker the advanced method uses, and why: the quality gate `lab ask` applies
    (lab_pipelines.rag.ask.gated_reranker); a rejection is logged."""
    ranker, reason = ask.gated_reranker(_models_dir(lab), models.reranker, device)
    if ranker is None:
        log(reason)
    return ranker, reason


@dg.asset_check(asset=reranker_model)
def reranker_beats_initialisation(context: dg.AssetCheckExecutionContext,
                                  models: ModelRegistry) -> dg.AssetCheckResult:
    """The trained re-ranker should pick the positive more often than its untrained start."""
    if models.reranker:
        return dg.AssetCheckResult(passed=True, description="configured re-ranker, not trained")
    event = context.instance.get_latest_materialization_event(dg.AssetKey("reranker_model"))
    meta = event.asset_materialization.metadata if event else {}
    before = meta["heldout_top1_before"].value if "heldout_top1_before" in meta else None
    after = meta["heldout_top1_after"].value if "heldout_top1_after" in meta else None
    passed = before is not None and after is not None and after > before
    # A warning, not a gate: the benchmark's before/after recall shows what the re-ranker does.
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"before": before, "after": after})


class RagBenchmarkConfig(dg.Config):
    # Relative paths are from the repository root. The test set by default; the development
    # set (data/eval/rag_dev.jsonl, where the knobs are chosen) gives rows with split 'dev'.
    qa_file: str = "data/eval/rag_qa.jsonl"
    max_questions: int = 0  # 0: every question
    naive_k: int = benchmark.BenchmarkConfig.naive_k
    pool_k: int = benchmark.BenchmarkConfig.pool_k
    fuse: bool = benchmark.BenchmarkConfig.fuse
    top_n: int = benchmark.BenchmarkConfig.top_n
    compress_to: int = benchmark.BenchmarkConfig.compress_to
    read_reversed: bool = benchmark.BenchmarkConfig.read_reversed
    grounded: bool = benchmark.BenchmarkConfig.grounded
    min_alignment: float = benchmark.BenchmarkConfig.min_alignment
    min_confidence: float | None = benchmark.BenchmarkConfig.min_confidence
    prompt_format: str = "completion"
    max_new_tokens: int = 32
    dtype: str = "auto"  # the reader's weights: auto (bf16 where native), float32, bfloat16
    methods: list[str] = Field(default_factory=lambda: list(benchmark.METHODS))
    peer: bool = True  # also the langchain_default row: the LangChain tutorial's recipe


@dg.asset(pool="gpu0", deps=["generator_model", "reranker_model", "chunk_embeddings"])
def rag_benchmark(context: dg.AssetExecutionContext, config: RagBenchmarkConfig,
                  gpu0: CardResource, lab: LabResource,
                  models: ModelRegistry) -> dg.MaterializeResult:
    """Vanilla vs naive vs advanced RAG, and the oracle reader, on the gold QA set: one DuckDB
    row per method, every answer in a Parquet file beside the database."""
    qa_path = Path(config.qa_file)
    items = load_qa(qa_path if qa_path.is_absolute() else REPO_ROOT / qa_path)
    split = eval_split(qa_path)
    if config.max_questions:
        items = items[: config.max_questions]
    device = gpu0.resolve()
    model, tokenizer = model_registry.load_causal_lm(models.generator, device, _models_dir(lab),
                                                     config.dtype)
    generator = Generator(model, tokenizer, config.prompt_format, config.max_new_tokens)
    embedder = model_registry.load_embedder(models.embedder, device)
    search = PaperSearch(lab.lancedb_uri(), lambda q: embed_texts(embedder, [q])[0])
    reranker, reranker_used = gated_reranker(lab, models, device, context.log.warning)
    if reranker is not None and config.fuse:
        reranker_used += ", fused with the hybrid order (RRF)"
    settings = benchmark.BenchmarkConfig(naive_k=config.naive_k, pool_k=config.pool_k,
                                         fuse=config.fuse, top_n=config.top_n,
                                         compress_to=config.compress_to,
                                         read_reversed=config.read_reversed,
                                         grounded=config.grounded,
                                         min_alignment=config.min_alignment,
                                         min_confidence=config.min_confidence,
                                         methods=tuple(config.methods))
    started = time.perf_counter()
    per_question = benchmark.run_questions(items, generator, search, reranker, settings,
                                           log=context.log.info,
                                           embed=lambda texts: embed_texts(embedder, texts))
    if config.peer:  # same questions, reader and judge (lab_pipelines/rag/langchain_peer.py)
        peer = langchain_peer.run_on_library(benchmark.with_stored_sources(items, search),
                                             generator, embedder, models.embedder,
                                             lab.root() / "rag", log=context.log.info)
        per_question = pl.concat([per_question, peer], how="diagonal_relaxed")
    wall_s = time.perf_counter() - started
    summary = benchmark.summarize(per_question).with_columns(
        pl.lit(config.prompt_format).alias("prompt_format"),
        pl.lit(models.generator).alias("generator"), pl.lit(device).alias("device"),
        pl.lit(str(model.dtype).removeprefix("torch.")).alias("dtype"),
        pl.lit(config.compress_to).alias("compress_to"),
        pl.lit(round(wall_s, 1)).alias("wall_s"), pl.lit(reranker_used).alias("reranker"),
        pl.lit(split).alias("split"), pl.lit(qa_path.name).alias("qa_file"))
    append_rows(BENCHMARK_TABLE, summary, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=REQUIRED_COLUMNS)
    answers_path = lab.duckdb_path().parent / "rag_benchmark_answers" / f"{context.run.run_id}.parquet"
    buffer = io.BytesIO()
    per_question.write_parquet(buffer)
    atomic_write_bytes(answers_path, buffer.getvalue())
    shown = summary.select(*REQUIRED_COLUMNS, "withheld_rate", "withheld_correct",
                           "retrieval_p50_ms", "prefill_tokens_per_s", "decode_tokens_per_s")
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(markdown_table(shown)),
        "chart": dg.MetadataValue.md(image_markdown(benchmark.bar_chart_png(summary), "rag benchmark")),
        "answers_parquet": dg.MetadataValue.path(str(answers_path)),
        "reranker": reranker_used,
        "n_questions": len(items), "split": split, "wall_s": round(wall_s, 1),
        "device": device})
