"""Context compression: keep the sentences of the retrieved passages nearest the question.

A post-retrieval step of advanced RAG (Gao et al., 2023, "Retrieval-Augmented Generation for
Large Language Models: A Survey"): on a CPU the reader's latency is its prompt pass, so fewer
prompt tokens are the cheapest speed-up, and a small reader is less distracted by a short
context. Sentences are scored by cosine similarity to the question with the same bi-encoder
that retrieved them; the kept ones stay in their passage and in their original order, so the
reader still sees which passage a sentence came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lab_pipelines.rag.rerank import split_sentences

EmbedFn = Callable[[Sequence[str]], np.ndarray]  # texts -> unit-norm rows


def compress_passages(question: str, passages: Sequence[str], embed: EmbedFn,
                      keep: int) -> list[str]:
    """Each passage cut down to its sentences among the `keep` nearest the question overall
    (a sentence repeated by an overlapping neighbour counts once); passages left with none
    are dropped."""
    # Neighbouring chunks overlap (200 characters by default), so a sentence can come twice:
    # it is scored and shown once, in the first passage that holds it.
    seen: set[str] = set()
    sentences = [[s for s in split_sentences(p) if not (s in seen or seen.add(s))]
                 for p in passages]
    flat = [s for group in sentences for s in group]
    if len(flat) <= keep:
        return [p for p in passages if p.strip()]
    vectors = embed([question, *flat])
    scores = vectors[1:] @ vectors[0]
    chosen = set(np.argsort(-scores, kind="stable")[:keep].tolist())
    out, start = [], 0
    for group in sentences:
        kept = [s for i, s in enumerate(group) if start + i in chosen]
        start += len(group)
        if kept:
            out.append(" ".join(kept))
    return out
