"""Run a QA set (the test set `rag_qa.jsonl` or the development set `rag_dev.jsonl`) through
vanilla, naive, advanced RAG and the oracle reader, and score every answer.

Per question: the answer, whether it is correct (a normalised gold answer occurs in it as
whole tokens, `qa.answer_is_correct`; on a question the library cannot answer, declining),
whether the model abstained, hallucinated (neither),
whether the grounding check withheld it (and whether the withheld answer was right), where the
gold page ranked, and how long retrieval, prefill and decode took. Per method: the
`rag_benchmark` row (DESIGN columns plus retrieval latency, recall before re-ranking and the
reader's prefill/decode rates). Questions run in order and the methods take turns on each, so
a load spike on a shared machine hits all methods alike.

`oracle` hands the reader the gold page's chunk that holds the answer: the gap from it to 100%
is the reader's, the gap from `advanced` to it is retrieval's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from lab_pipelines.progress import LogFn, track
from lab_pipelines.rag.answer import (
    Answer,
    AnswerChecks,
    answer_advanced,
    answer_naive,
    answer_oracle,
    answer_vanilla,
)
from lab_pipelines.rag.compress import EmbedFn
from lab_pipelines.rag.generate import ABSTAIN, Generator, is_abstention
from lab_pipelines.rag.qa import (
    QAItem,
    answer_is_correct,
    contains_answer,
    resolve_sources,
    score,
)
from lab_pipelines.rag.rerank import Reranker
from lab_pipelines.rag.search import PaperSearch, Passage

METHODS = ("vanilla", "naive", "advanced", "oracle")
CHECKED = ("advanced", "oracle")  # the methods whose answers go through AnswerChecks
RECALL_K = 5
NOT_IN_LIBRARY = "(not in the library)"


@dataclass(frozen=True)
class BenchmarkConfig:
    naive_k: int = 3
    pool_k: int = 8  # hybrid pool the cross-encoder re-ranks
    fuse: bool = True  # fuse the cross-encoder's order with the pool's (RRF) instead of replacing it
    top_n: int = 5
    compress_to: int = 12  # advanced: sentences kept from the top passages (0: whole passages)
    # advanced: read the passages in rank order and reversed, keep the more confident answer
    read_reversed: bool = True
    grounded: bool = True  # advanced and oracle: withhold answers the passages do not back,
    min_alignment: float = AnswerChecks.min_alignment  # or taken from an off-question sentence,
    min_confidence: float | None = AnswerChecks.min_confidence  # or read with low confidence
    methods: tuple[str, ...] = METHODS

    @property
    def checks(self) -> AnswerChecks:
        return AnswerChecks(self.grounded, self.min_alignment, self.min_confidence)


def gold_rank(item: QAItem, passages: Sequence[Passage]) -> int | None:
    """1-based rank of the first passage from the gold file whose pages include the gold page."""
    for rank, p in enumerate(passages, start=1):
        if p.file_name == item.source and p.page_start <= item.page <= p.page_end:
            return rank
    return None


def library_files(search: PaperSearch) -> list[str]:
    """The file names the index holds, the names a QA file's sources are mapped to."""
    column = search.table.search().select(["file_name"]).limit(10_000_000).to_arrow()
    return sorted(set(column["file_name"].to_pylist()))


def with_stored_sources(items: Sequence[QAItem], search: PaperSearch) -> list[QAItem]:
    """`items` with each source as the library stores it (`qa.resolve_source`): a user's QA
    file may name `relax.pdf` for the stored `glmnet__relax.pdf`."""
    return resolve_sources(items, library_files(search))


def oracle_passage(item: QAItem, search: PaperSearch) -> Passage | None:
    """The gold page's chunk that holds a gold answer (the page's first chunk if none does).
    A question the library cannot answer has no gold page: the reader gets the passage
    hybrid search ranks first, the nearest thing to an answer there is, and must decline."""
    if not item.answerable:
        return next(iter(search.hybrid(item.question, 1)), None)
    chunks = search.on_page(item.source, item.page)
    holding = [c for c in chunks if any(contains_answer(c.text, a) for a in item.answers)]
    return (holding or chunks or [None])[0]


def _answer(method: str, item: QAItem, generator: Generator, search: PaperSearch,
            reranker: Reranker | None, config: BenchmarkConfig,
            embed: EmbedFn | None) -> Answer:
    if method == "vanilla":
        return answer_vanilla(item.question, generator)
    if method == "naive":
        return answer_naive(item.question, generator, search, config.naive_k)
    if method == "advanced":
        return answer_advanced(item.question, generator, search, reranker, config.pool_k,
                               config.top_n, config.fuse, config.compress_to, embed,
                               config.checks, config.read_reversed)
    if method == "oracle":
        gold = oracle_passage(item, search)
        if gold is None:
            raise ValueError(f"{item.id}: no chunk of {item.source} spans page {item.page}; "
                             "is the library indexed?")
        return answer_oracle(item.question, generator, gold, config.checks)
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")


def _row(method: str, item: QAItem, ans: Answer) -> dict:
    retrieved = method not in ("vanilla", "oracle")
    outcome = score(item, ans.text, ans.abstained)
    rank = gold_rank(item, ans.ranked) if retrieved else None
    rank_before = gold_rank(item, ans.pool) if ans.pool else rank
    stats = ans.stats
    return {
        "method": method, "id": item.id, "question": item.question, "type": item.type,
        "answerable": item.answerable, "gold": " | ".join(item.answers) or NOT_IN_LIBRARY,
        "source": item.source, "page": item.page,
        "answer": ans.text, "raw_answer": ans.raw_text, "citations": "; ".join(ans.citations),
        "correct": outcome.correct, "abstained": outcome.abstained,
        "hallucinated": outcome.hallucinated,
        "withheld": ans.withheld,
        "withheld_correct": ans.withheld and answer_is_correct(ans.raw_text, item.answers),
        "gold_rank": rank, "gold_rank_before_rerank": rank_before,
        "latency_s": ans.latency_s, "retrieval_s": ans.retrieval_s if retrieved else None,
        "generation_s": ans.generation_s,
        "prompt_tokens": stats.prompt_tokens if stats else None,
        "new_tokens": stats.new_tokens if stats else None,
        "prefill_s": stats.prefill_s if stats else None,
        "decode_s": stats.decode_s if stats else None,
        "confidence": stats.confidence if stats else None,
        "shown": list(ans.shown),
    }


def run_questions(items: Sequence[QAItem], generator: Generator, search: PaperSearch | None,
                  reranker: Reranker | None, config: BenchmarkConfig = BenchmarkConfig(),
                  log: LogFn | None = None, embed: EmbedFn | None = None) -> pl.DataFrame:
    """One row per (question, method): the per-question results frame. `log` gets paced
    progress lines (a tqdm bar without it); `embed` (texts -> unit rows) serves compression."""
    if not items:
        raise ValueError("No questions to run.")
    unknown = set(config.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}.")
    if search is not None:
        items = with_stored_sources(items, search)
    # One untimed pass so lazy initialisation (kernels, FTS reader) is not billed to question 1.
    for method in config.methods:
        _answer(method, items[0], generator, search, reranker, config, embed)
    rows = [_row(method, item, _answer(method, item, generator, search, reranker, config, embed))
            for item in track(items, "RAG benchmark questions", log, unit="question")
            for method in config.methods]
    return pl.DataFrame(rows, schema_overrides={"gold_rank": pl.Int64,
                                                "gold_rank_before_rerank": pl.Int64,
                                                "retrieval_s": pl.Float64,
                                                "prompt_tokens": pl.Int64, "new_tokens": pl.Int64,
                                                "prefill_s": pl.Float64, "decode_s": pl.Float64,
                                                "confidence": pl.Float64,
                                                "shown": pl.List(pl.String)})


def recheck(per_question: pl.DataFrame, items: Sequence[QAItem],
            checks: AnswerChecks) -> pl.DataFrame:
    """The per-question frame as if the answers had gone through `checks`: the reader's raw
    answers and the passages it read are recorded, so a sweep of the thresholds needs no new
    generation (the reading kept does not depend on the checks). Run with `grounded=False`
    to record answers nothing withheld."""
    by_id = {item.id: item for item in items}
    rows = []
    for row in per_question.iter_rows(named=True):
        item, raw = by_id[row["id"]], row["raw_answer"]
        withheld = row["method"] in CHECKED and checks.withhold(
            item.question, raw, row["confidence"], row["shown"])
        text = ABSTAIN if withheld else raw
        outcome = score(item, text, is_abstention(text))
        rows.append({**row, "answer": text, "correct": outcome.correct,
                     "abstained": outcome.abstained, "hallucinated": outcome.hallucinated,
                     "withheld": withheld,
                     "withheld_correct": withheld and answer_is_correct(raw, item.answers)})
    return pl.DataFrame(rows, schema=per_question.schema)


def _recall(part: pl.DataFrame, column: str) -> float | None:
    """Share of answerable questions whose gold page is in the top RECALL_K (an unanswerable
    one has no gold page to find)."""
    if "answerable" in part.columns:
        part = part.filter(pl.col("answerable"))
    ranks = part[column]
    return float(((ranks <= RECALL_K).fill_null(False)).mean()) if len(ranks) else None


def summarize(per_question: pl.DataFrame) -> pl.DataFrame:
    """The `rag_benchmark` rows, one per method, in the order they ran (METHODS, then a peer
    such as `langchain_default` whose rows come after)."""
    rows = []
    for method in per_question["method"].unique(maintain_order=True):
        part = per_question.filter(pl.col("method") == method)
        latency = part["latency_s"].to_numpy()
        retrieved = method not in ("vanilla", "oracle")
        retrieval = part["retrieval_s"].drop_nulls().to_numpy()
        rows.append({
            "method": method,
            "n_questions": part.height,
            "accuracy": float(part["correct"].mean()),
            "hallucination_rate": float(part["hallucinated"].mean()),
            "abstention_rate": float(part["abstained"].mean()),
            "latency_p50_s": float(np.percentile(latency, 50)),
            "latency_p95_s": float(np.percentile(latency, 95)),
            "retrieval_recall_at_5": _recall(part, "gold_rank") if retrieved else None,
            "recall_at_5_before_rerank": (_recall(part, "gold_rank_before_rerank")
                                          if retrieved else None),
            "retrieval_p50_ms": float(np.percentile(retrieval, 50) * 1000) if retrieved else None,
            "retrieval_p95_ms": float(np.percentile(retrieval, 95) * 1000) if retrieved else None,
            "withheld_rate": float(part["withheld"].mean()),
            "withheld_correct": int(part["withheld_correct"].sum()),
            **_unanswerable(part),
            **_reader_rates(part),
        })
    return pl.DataFrame(rows, schema_overrides={
        "retrieval_recall_at_5": pl.Float64, "recall_at_5_before_rerank": pl.Float64,
        "retrieval_p50_ms": pl.Float64, "retrieval_p95_ms": pl.Float64,
        "unanswerable_declined": pl.Float64, "prompt_tokens_p50": pl.Float64,
        "prefill_tokens_per_s": pl.Float64, "decode_tokens_per_s": pl.Float64})


def _unanswerable(part: pl.DataFrame) -> dict[str, float | int | None]:
    """How many questions had no answer in the library, and the share of those declined."""
    if "answerable" not in part.columns:
        return {"n_unanswerable": 0, "unanswerable_declined": None}
    none = part.filter(~pl.col("answerable"))
    return {"n_unanswerable": none.height,
            "unanswerable_declined": float(none["correct"].mean()) if none.height else None}


def _reader_rates(part: pl.DataFrame) -> dict[str, float | None]:
    """Prompt size and the reader's prefill and decode throughput over the method's answers
    (decode counts the tokens after the first, which prefill produces)."""
    if "prefill_s" not in part.columns or part["prefill_s"].null_count() == part.height:
        return {"prompt_tokens_p50": None, "prefill_tokens_per_s": None,
                "decode_tokens_per_s": None}
    decoded = (part["new_tokens"] - 1).clip(lower_bound=0).sum()
    decode_s = part["decode_s"].sum()
    return {"prompt_tokens_p50": float(part["prompt_tokens"].median()),
            "prefill_tokens_per_s": float(part["prompt_tokens"].sum() / part["prefill_s"].sum()),
            "decode_tokens_per_s": float(decoded / decode_s) if decode_s > 0 else None}


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
