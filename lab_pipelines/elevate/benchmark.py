"""standard_rag vs grounded_rag vs elevate on the gold QA set, judged claim by claim.

All three share one retrieval (advanced: hybrid pool, re-ranked, top passages), one reader and
one answer style, and they share the reader's draft: `standard_rag` ships it as it is,
`grounded_rag` ships it only if the grounding check passes (else an abstention: a filter, no
loop), `elevate` verifies and refines it (`loop.refine`). Each method's latency is retrieval +
draft + its own extra work, so sharing the draft costs no method anything it would not pay
alone. Claims are judged by `judge.Judge`, which sees the gold; the critic never does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from lab_pipelines.elevate.claims import split_claims
from lab_pipelines.elevate.critic import Critic
from lab_pipelines.elevate.judge import Judge
from lab_pipelines.elevate.loop import LoopConfig, draft_answer, refine
from lab_pipelines.progress import LogFn, track
from lab_pipelines.rag.answer import rerank
from lab_pipelines.rag.benchmark import NOT_IN_LIBRARY, with_stored_sources
from lab_pipelines.rag.generate import ABSTAIN, Generator, is_abstention
from lab_pipelines.rag.grounding import ground_answer
from lab_pipelines.rag.qa import QAItem, score
from lab_pipelines.rag.rerank import Reranker
from lab_pipelines.rag.search import PaperSearch

METHODS = ("standard_rag", "grounded_rag", "elevate")


@dataclass(frozen=True)
class BenchmarkConfig:
    pool_k: int = 8
    top_n: int = 3
    fuse: bool = True
    loop: LoopConfig = field(default_factory=LoopConfig)


def _method_row(method: str, item: QAItem, text: str, claims: list[str], latency_s: float,
                rounds: int, judge: Judge, gold_page: list[str], seen: dict[str, str],
                corrections: Sequence[str] = ()) -> dict:
    verdicts = [seen.setdefault(c, judge.judge(c, item, gold_page)) for c in claims]
    outcome = score(item, text, is_abstention(text))
    return {"method": method, "id": item.id, "question": item.question,
            "answerable": item.answerable, "gold": " | ".join(item.answers) or NOT_IN_LIBRARY,
            "answer": text, "n_claims": len(claims),
            "n_correct": verdicts.count("correct"),
            "n_hallucinated": verdicts.count("hallucinated"),
            "n_neutral": verdicts.count("neutral"), "correct": outcome.correct,
            "abstained": outcome.abstained, "hallucinated": outcome.hallucinated,
            "rounds": rounds,
            "corrections": "\n".join(corrections), "latency_s": latency_s}


def _claims(text: str, question: str) -> list[str]:
    return [] if is_abstention(text) else [c.text for c in split_claims(text, question)]


def run_questions(items: Sequence[QAItem], generator: Generator, search: PaperSearch,
                  reranker: Reranker | None, critic: Critic, judge: Judge,
                  config: BenchmarkConfig = BenchmarkConfig(),
                  log: LogFn | None = None) -> pl.DataFrame:
    """One row per (question, method)."""
    if not items:
        raise ValueError("No questions to run.")
    items = with_stored_sources(items, search)
    # Untimed, so lazy initialisation (kernels, the FTS reader) is not billed to question 1.
    draft_answer(items[0].question, ["warm-up"], generator, 4)
    rows = []
    for item in track(items, "ELEVATE benchmark questions", log, unit="question"):
        started = time.perf_counter()
        _, ranked = rerank(item.question, search, reranker, config.pool_k, config.fuse)
        shown = ranked[:config.top_n]
        texts = [p.text for p in shown]
        draft = draft_answer(item.question, texts, generator, config.loop.max_new_tokens)
        standard_s = time.perf_counter() - started
        check_started = time.perf_counter()
        grounded = draft if is_abstention(draft) else ground_answer(draft, texts, ABSTAIN)[0]
        grounded_s = standard_s + time.perf_counter() - check_started
        result = refine(item.question, draft, shown, generator, critic,
                        lambda query, k: search.hybrid(query, k), config.loop)
        gold_page, seen = judge.gold_page(item), {}
        rows += [_method_row("standard_rag", item, draft, _claims(draft, item.question),
                             standard_s, 0, judge, gold_page, seen),
                 _method_row("grounded_rag", item, grounded, _claims(grounded, item.question),
                             grounded_s, 0, judge, gold_page, seen),
                 _method_row("elevate", item, result.text, [c.text for c in result.kept],
                             standard_s + result.seconds, result.rounds, judge, gold_page, seen,
                             result.corrections)]
    return pl.DataFrame(rows)


def summarize(per_question: pl.DataFrame) -> pl.DataFrame:
    """The `elevate_benchmark` rows, one per method, in METHODS order."""
    rows = []
    for method in [m for m in METHODS if m in set(per_question["method"])]:
        part = per_question.filter(pl.col("method") == method)
        n_claims = int(part["n_claims"].sum())
        latency = part["latency_s"].to_numpy()
        rows.append({
            "method": method, "n_questions": part.height, "n_claims": n_claims,
            "correct_claims": float(part["n_correct"].sum() / n_claims) if n_claims else 0.0,
            "hallucinated_claims": (float(part["n_hallucinated"].sum() / n_claims)
                                    if n_claims else 0.0),
            "avg_latency_s": float(latency.mean()),
            "correct_claims_per_question": float(part["n_correct"].mean()),
            "accuracy": float(part["correct"].mean()),
            "hallucination_rate": float(part["hallucinated"].mean()),
            "abstention_rate": float(part["abstained"].mean()),
            "rounds_mean": float(part["rounds"].mean()),
            "latency_p50_s": float(np.percentile(latency, 50)),
            "latency_p95_s": float(np.percentile(latency, 95)),
        })
    return pl.DataFrame(rows)
