"""A FactCC-style claim classifier (Kryscinski et al. 2020) trained on the library itself.

Pairs are (evidence, claim) made from indexed chunks: a sentence of a chunk, verbatim or
lightly paraphrased, is a supported claim; the same sentence with one rule-based corruption
(`perturb`: number, year, name, unit, negation, role swap) is a contradicted one. Supported
and contradicted pairs are balanced, one of each per sentence, so the model must read the
difference rather than the sentence. The evidence is what the critic shows the classifier at
inference: the chunk's sentences closest to the claim (`critic.best_sentences`).

The model is the re-ranker's architecture (`rag.rerank.init_cross_encoder`: the packaged
MiniLM cut to its first layers, mean-pooled over the joint encoding, one logit), trained with
binary cross-entropy; P(supported) = sigmoid(logit). Papers are split into train and held-out,
and the papers the claim set was written from are excluded altogether, so the critic is never
measured on a paper its classifier saw.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from lab_pipelines.devices import configure_torch_for, inference_autocast
from lab_pipelines.elevate.critic import best_sentences
from lab_pipelines.elevate.perturb import PERTURBATIONS, corrupt, names_in, paraphrase
from lab_pipelines.progress import LogFn
from lab_pipelines.rag.rerank import (
    RerankerConfig,
    fine_tune,
    init_cross_encoder,
    pair_scores,
    split_sentences,
)


@dataclass(frozen=True)
class ClassifierConfig:
    init_model: str = "packaged:all-MiniLM-L6-v2"
    n_layers: int = 3
    max_length: int = 128
    n_sentences: int = 1200  # each gives one supported and one contradicted pair
    heldout_fraction: float = 0.2
    epochs: int = 1  # a second epoch measured no better on held-out pairs (0.759 vs 0.764)
    batch_size: int = 16
    lr: float = 5e-5
    head_lr: float = 1e-2
    seed: int = 0


@dataclass(frozen=True)
class Pair:
    evidence: str
    claim: str
    label: int  # 1 supported, 0 contradicted
    perturbation: str  # "verbatim", "paraphrase" or one of perturb.PERTURBATIONS
    doc_id: str


# Not prose: links, reference-list entries, captions, worked examples, equations.
_NOT_PROSE = re.compile(r"https?:|doi|arxiv|\bpp\.|journal of|proceedings|^(figure|fig\.|table|"
                        r"answer|question|appendix|step)\b|[=√∑∫λ]|\d{4}\. “", re.IGNORECASE)


def usable_sentence(sentence: str) -> bool:
    """Prose a reader could state as a claim: a whole sentence, mostly letters, not a
    reference, caption or formula, and not a list of names."""
    letters = sum(ch.isalpha() for ch in sentence)
    words = sentence.split()
    capitals = sum(w[0].isupper() for w in words[1:]) / max(1, len(words) - 1)
    return (50 <= len(sentence) <= 220 and letters >= 0.75 * len(sentence)
            and sentence[0].isupper() and sentence.endswith(".") and capitals < 0.3
            and not _NOT_PROSE.search(sentence))


def name_pool(texts: Iterable[str], min_count: int = 3, size: int = 300) -> list[str]:
    """The library's most frequent names, the stand-ins a name swap draws from."""
    counts = Counter(n for t in texts for s in split_sentences(t) for n in names_in(s))
    return [n for n, c in counts.most_common(size) if c >= min_count]


def make_pairs(chunks: pl.DataFrame, n_sentences: int, seed: int,
               exclude_files: Iterable[str] = ()) -> list[Pair]:
    """Up to `n_sentences` sentences, each as a supported and a contradicted pair; the
    corruption of each is drawn in turn from those the sentence allows."""
    rng = random.Random(seed)
    excluded = set(exclude_files)
    rows = [r for r in chunks.select("doc_id", "file_name", "text").iter_rows(named=True)
            if r["file_name"] not in excluded]
    names = name_pool(r["text"] for r in rows)
    rng.shuffle(rows)
    pairs: list[Pair] = []
    kinds = list(PERTURBATIONS)
    for row in rows:
        sentences = [s for s in split_sentences(row["text"]) if usable_sentence(s)]
        if not sentences:
            continue
        sentence = rng.choice(sentences)
        rng.shuffle(kinds)
        corrupted = next(((k, c) for k in kinds
                          if (c := corrupt(k, sentence, rng, names)) is not None), None)
        if corrupted is None:
            continue
        supported = (paraphrase(sentence, rng) if rng.random() < 0.5 else None)
        for kind, claim, label in ((("paraphrase" if supported else "verbatim"),
                                    supported or sentence, 1), (*corrupted, 0)):
            evidence = " ".join(best_sentences(claim, [row["text"]]))
            pairs.append(Pair(evidence, claim, label, kind, row["doc_id"]))
        if len(pairs) >= 2 * n_sentences:
            break
    return pairs


def split_by_document(pairs: Sequence[Pair], heldout_fraction: float,
                      seed: int) -> tuple[list[Pair], list[Pair]]:
    docs = sorted({p.doc_id for p in pairs})
    random.Random(seed).shuffle(docs)
    heldout_docs = set(docs[: max(1, round(len(docs) * heldout_fraction))])
    return ([p for p in pairs if p.doc_id not in heldout_docs],
            [p for p in pairs if p.doc_id in heldout_docs])


class ClaimClassifier:
    """P(supported) for (evidence, claim) pairs from a trained cross-encoder."""

    def __init__(self, cross_encoder, bf16: bool = False) -> None:
        self.cross_encoder = cross_encoder.eval()
        self.bf16 = bf16

    def support(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        device = str(self.cross_encoder.device)
        precision = inference_autocast(device) if self.bf16 else contextlib.nullcontext()
        with torch.inference_mode(), precision:
            logits = pair_scores(self.cross_encoder, list(pairs))
        return torch.sigmoid(logits.float()).cpu().tolist()


def pair_scores_of(classifier: ClaimClassifier, pairs: Sequence[Pair],
                   batch: int = 32) -> np.ndarray:
    return np.array([s for i in range(0, len(pairs), batch) for s in classifier.support(
        [(p.evidence, p.claim) for p in pairs[i:i + batch]])])


def veto_threshold(scores: np.ndarray, labels: Sequence[int], keep: float = 0.95) -> float:
    """The P(supported) under which the critic lets the classifier reject a claim the rules
    passed: low enough that `keep` of the held-out supported pairs stay above it. The rules
    already catch most corruptions, so the classifier's job there is a confident veto, and a
    veto on a true claim costs the loop a rewrite or the claim itself."""
    supported = scores[np.asarray(labels) == 1]
    return float(min(0.5, np.quantile(supported, 1 - keep))) if supported.size else 0.5


@dataclass
class ClassifierReport:
    n_train: int
    n_heldout: int
    steps: int
    train_seconds: float
    heldout_accuracy: float
    heldout_majority: float  # accuracy of always answering the commonest held-out label
    veto_threshold: float  # see `veto_threshold`, set on the held-out pairs


def _bce_loss(model, batch: Sequence[Pair]) -> torch.Tensor:
    logits = pair_scores(model, [(p.evidence, p.claim) for p in batch])
    target = torch.tensor([float(p.label) for p in batch], device=logits.device)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def train_classifier(train: Sequence[Pair], heldout: Sequence[Pair], config: ClassifierConfig,
                     device: str = "cpu", log: LogFn | None = None):
    """Fine-tune the cross-encoder on the pairs; returns (ClaimClassifier, ClassifierReport)."""
    if not train or not heldout:
        raise ValueError(f"Need train and held-out pairs, got {len(train)} and {len(heldout)}.")
    configure_torch_for(device)
    model = init_cross_encoder(RerankerConfig(init_model=config.init_model,
                                              n_layers=config.n_layers,
                                              max_length=config.max_length, seed=config.seed),
                               device)
    started = time.perf_counter()
    total = fine_tune(model, train, config.batch_size, config.epochs, config.lr, config.head_lr,
                      config.seed, lambda batch: _bce_loss(model, batch),
                      "claim classifier training", log)
    seconds = time.perf_counter() - started
    classifier = ClaimClassifier(model)
    labels = [p.label for p in heldout]
    scores = pair_scores_of(classifier, heldout)
    accuracy = float(np.mean((scores >= 0.5) == np.asarray(labels, bool)))
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    return classifier, ClassifierReport(len(train), len(heldout), total, seconds, accuracy,
                                        majority, veto_threshold(scores, labels))
