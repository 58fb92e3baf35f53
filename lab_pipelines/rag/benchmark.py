"""Run the gold QA set through vanilla, naive and advanced RAG and score every answer.

Per question: the answer, whether it is correct (a normalised gold answer occurs in it as
whole tokens, `qa.answer_is_correct`), whether the model abstained, hallucinated (neither),
where the gold page ranked, and how long retrieval and generation took. Per method: the
`rag_benchmark` row (DESIGN columns plus retrieval latency and recall before re-ranking).
Questions run in order and the three methods take turns on each, so a load spike on a shared
machine hits all methods alike.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from lab_pipelines.rag.answer import Answer, answer_advanced, answer_naive, answer_vanilla
from lab_pipelines.rag.generate import Generator
from lab_pipelines.rag.qa import QAItem, answer_is_correct
from lab_pipelines.rag.rerank import Reranker
from lab_pipelines.rag.search import PaperSearch, Passage

log = logging.getLogger(__name__)

METHODS = ("vanilla", "naive", "advanced")
RECALL_K = 5


@dataclass(frozen=True)
class BenchmarkConfig:
    naive_k: int = 3  # same prompt budget as advanced's top_n: only retrieval differs
    pool_k: int = 8  # hybrid pool the cross-encoder re-ranks
    fuse: bool = True  # fuse the cross-encoder's order with the pool's (RRF) instead of replacing it
    top_n: int = 3
    methods: tuple[str, ...] = METHODS


def gold_rank(item: QAItem, passages: Sequence[Passage]) -> int | None:
    """1-based rank of the first passage from the gold file whose pages include the gold page."""
    for rank, p in enumerate(passages, start=1):
        if p.file_name == item.source and p.page_start <= item.page <= p.page_end:
            return rank
    return None


def _answer(method: str, item: QAItem, generator: Generator, search: PaperSearch,
            reranker: Reranker | None, config: BenchmarkConfig) -> Answer:
    if method == "vanilla":
        return answer_vanilla(item.question, generator)
    if method == "naive":
        return answer_naive(item.question, generator, search, config.naive_k)
    if method == "advanced":
        return answer_advanced(item.question, generator, search, reranker, config.pool_k,
                               config.top_n, config.fuse)
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")


def _row(method: str, item: QAItem, ans: Answer) -> dict:
    retrieved = method != "vanilla"
    correct = answer_is_correct(ans.text, item.answers)
    rank = gold_rank(item, ans.ranked) if retrieved else None
    rank_before = gold_rank(item, ans.pool) if ans.pool else rank
    return {
        "method": method, "id": item.id, "question": item.question,
        "gold": " | ".join(item.answers), "source": item.source, "page": item.page,
        "answer": ans.text, "citations": "; ".join(ans.citations),
        "correct": correct, "abstained": ans.abstained and not correct,
        "hallucinated": not correct and not ans.abstained,
        "gold_rank": rank, "gold_rank_before_rerank": rank_before,
        "latency_s": ans.latency_s, "retrieval_s": ans.retrieval_s if retrieved else None,
        "generation_s": ans.generation_s,
    }


def run_questions(items: Sequence[QAItem], generator: Generator, search: PaperSearch | None,
                  reranker: Reranker | None, config: BenchmarkConfig = BenchmarkConfig(),
                  progress: Callable[[str], None] = log.info) -> pl.DataFrame:
    """One row per (question, method): the per-question results frame."""
    if not items:
        raise ValueError("No questions to run.")
    unknown = set(config.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}.")
    # One untimed pass so lazy initialisation (kernels, FTS reader) is not billed to question 1.
    for method in config.methods:
        _answer(method, items[0], generator, search, reranker, config)
    rows = []
    started = time.perf_counter()
    for n, item in enumerate(items, start=1):
        for method in config.methods:
            rows.append(_row(method, item, _answer(method, item, generator, search, reranker,
                                                   config)))
        if n % 10 == 0 or n == len(items):
            progress(f"{n}/{len(items)} questions, {time.perf_counter() - started:.0f} s")
    return pl.DataFrame(rows, schema_overrides={"gold_rank": pl.Int64,
                                                "gold_rank_before_rerank": pl.Int64,
                                                "retrieval_s": pl.Float64})


def _recall(ranks: pl.Series) -> float:
    return float(((ranks <= RECALL_K).fill_null(False)).mean())


def summarize(per_question: pl.DataFrame) -> pl.DataFrame:
    """The `rag_benchmark` rows, one per method, in METHODS order."""
    rows = []
    for method in [m for m in METHODS if m in set(per_question["method"])]:
        part = per_question.filter(pl.col("method") == method)
        latency = part["latency_s"].to_numpy()
        retrieved = method != "vanilla"
        retrieval = part["retrieval_s"].drop_nulls().to_numpy()
        rows.append({
            "method": method,
            "n_questions": part.height,
            "accuracy": float(part["correct"].mean()),
            "hallucination_rate": float(part["hallucinated"].mean()),
            "abstention_rate": float(part["abstained"].mean()),
            "latency_p50_s": float(np.percentile(latency, 50)),
            "latency_p95_s": float(np.percentile(latency, 95)),
            "retrieval_recall_at_5": _recall(part["gold_rank"]) if retrieved else None,
            "recall_at_5_before_rerank": (_recall(part["gold_rank_before_rerank"])
                                          if retrieved else None),
            "retrieval_p50_ms": float(np.percentile(retrieval, 50) * 1000) if retrieved else None,
            "retrieval_p95_ms": float(np.percentile(retrieval, 95) * 1000) if retrieved else None,
        })
    return pl.DataFrame(rows, schema_overrides={
        "retrieval_recall_at_5": pl.Float64, "recall_at_5_before_rerank": pl.Float64,
        "retrieval_p50_ms": pl.Float64, "retrieval_p95_ms": pl.Float64})


def bar_chart_png(summary: pl.DataFrame) -> bytes:
    """Accuracy, hallucination and abstention per method, grouped bars, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["accuracy", "hallucination_rate", "abstention_rate", "retrieval_recall_at_5"]
    methods = summary["method"].to_list()
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for i, method in enumerate(methods):
        row = summary.row(i, named=True)
        values = [row[m] if row[m] is not None else 0.0 for m in metrics]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(x, ["accuracy", "hallucination", "abstention", "recall@5"])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"RAG benchmark ({int(summary['n_questions'][0])} questions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
