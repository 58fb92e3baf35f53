"""A cross-encoder re-ranker trained on the library itself (no re-ranker ships offline).

Training data is the inverse cloze task (Lee et al., ORQA 2019): a sentence taken out of a
chunk is a pseudo-query, that chunk (usually with the sentence removed, so the model must
match context rather than copy) is the positive, and the chunks a dense retriever ranks
highest for the sentence, minus the source chunk and its overlapping neighbours, are hard
negatives. A MiniLM encoder (the packaged all-MiniLM-L6-v2 BERT, optionally cut to its first
layers for CPU latency) with a fresh one-logit head is fine-tuned with a listwise softmax loss
over (positive, negatives) groups. The result is a sentence-transformers `CrossEncoder`
folder, so any hub or local CrossEncoder can take its place by config.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
import polars as pl
import torch

from lab_pipelines.devices import configure_torch_for
from lab_pipelines.rag.index import TABLE

log = logging.getLogger(__name__)

# Sentence ends followed by a capital, digit or bracket: good enough for papers, and it does not
# split "e.g. the" or "Fig. 3" mid-sentence often enough to matter for pseudo-queries.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass(frozen=True)
class RerankerConfig:
    init_model: str = "packaged:all-MiniLM-L6-v2"
    n_layers: int = 3  # first layers of the init encoder kept; fewer = faster re-ranking on CPU
    max_length: int = 160
    n_queries: int = 600
    n_negatives: int = 3
    heldout_fraction: float = 0.15
    # ORQA keeps the query sentence in its context 10% of the time to pretrain a retriever; a
    # re-ranker for questions must also learn that shared words matter, so keep it half the time.
    keep_sentence_prob: float = 0.5
    epochs: int = 1
    batch_groups: int = 8
    lr: float = 1e-4
    head_lr_scale: float = 20.0
    seed: int = 0


@dataclass(frozen=True)
class PseudoQuery:
    query: str
    positive: str
    negatives: tuple[str, ...]


def passage_input(title: str, text: str) -> str:
    """What the cross-encoder reads for a passage: the paper title tells it which paper."""
    return f"{title}. {text}" if title else text


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _usable_query(sentence: str) -> bool:
    letters = sum(ch.isalpha() for ch in sentence)
    return 40 <= len(sentence) <= 240 and letters >= 0.6 * len(sentence)


def mine_pseudo_queries(chunks: pl.DataFrame, n_queries: int, keep_sentence_prob: float,
                        seed: int) -> pl.DataFrame:
    """One inverse-cloze pseudo-query per sampled chunk: columns row, query, positive."""
    rng = random.Random(seed)
    order = list(range(chunks.height))
    rng.shuffle(order)
    titles, texts = chunks["title"].to_list(), chunks["text"].to_list()
    rows = []
    for i in order:
        sentences = split_sentences(texts[i])
        candidates = [j for j, s in enumerate(sentences) if _usable_query(s)]
        if len(sentences) < 3 or not candidates:
            continue
        j = rng.choice(candidates)
        context = sentences if rng.random() < keep_sentence_prob else (
            sentences[:j] + sentences[j + 1:])
        rows.append({"row": i, "query": sentences[j],
                     "positive": passage_input(titles[i], " ".join(context))})
        if len(rows) == n_queries:
            break
    return pl.DataFrame(rows, schema={"row": pl.Int64, "query": pl.Utf8, "positive": pl.Utf8})


def add_hard_negatives(queries: pl.DataFrame, chunks: pl.DataFrame, chunk_vectors: np.ndarray,
                       query_vectors: np.ndarray, n_negatives: int) -> list[PseudoQuery]:
    """Top dense-retrieval chunks for each query that are not its source or a neighbour.

    Neighbours (same document, chunk index +-1) share 200 characters of overlap with the
    source, so they may contain the query sentence itself: they would be false negatives.
    """
    scores = query_vectors @ chunk_vectors.T  # unit vectors: cosine similarity, one matmul
    doc = chunks["doc_id"].to_numpy()
    index = chunks["chunk_index"].to_numpy()
    src = queries["row"].to_numpy()
    near = (doc[None, :] == doc[src][:, None]) & (np.abs(index[None, :] - index[src][:, None]) <= 1)
    scores[near] = -np.inf
    top = np.argsort(-scores, axis=1)[:, : n_negatives * 2]
    texts = [passage_input(t, x) for t, x in zip(chunks["title"], chunks["text"], strict=True)]
    out = []
    for q, positive, candidates in zip(queries["query"], queries["positive"], top, strict=True):
        negatives = [texts[c] for c in candidates if q not in texts[c]][:n_negatives]
        if len(negatives) == n_negatives:
            out.append(PseudoQuery(q, positive, tuple(negatives)))
    return out


def read_index(db_uri: Path, table_name: str = TABLE) -> tuple[pl.DataFrame, np.ndarray]:
    """The chunk rows and their unit-norm vectors from the LanceDB table."""
    table = lancedb.connect(str(db_uri)).open_table(table_name).to_arrow()
    frame = pl.from_arrow(table.drop_columns(["vector"]))
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    return frame, vectors


def build_training_set(db_uri: Path, embed: Callable[[Sequence[str]], np.ndarray],
                       config: RerankerConfig) -> tuple[list[PseudoQuery], list[PseudoQuery]]:
    """(train, held-out) pseudo-query groups mined from the indexed library.

    The split is by document so held-out queries come from papers the model never trained on.
    """
    chunks, vectors = read_index(db_uri)
    queries = mine_pseudo_queries(chunks, config.n_queries, config.keep_sentence_prob,
                                  config.seed)
    if queries.height == 0:
        raise ValueError(f"No usable sentences in {db_uri} to mine pseudo-queries from.")
    groups = add_hard_negatives(queries, chunks, vectors, embed(queries["query"].to_list()),
                                config.n_negatives)
    docs = sorted(set(chunks["doc_id"]))
    random.Random(config.seed).shuffle(docs)
    heldout_docs = set(docs[: max(1, round(len(docs) * config.heldout_fraction))])
    doc_of = dict(zip(queries["query"], chunks["doc_id"].gather(queries["row"]), strict=True))
    train = [g for g in groups if doc_of[g.query] not in heldout_docs]
    heldout = [g for g in groups if doc_of[g.query] in heldout_docs]
    return train, heldout


def init_cross_encoder(config: RerankerConfig, device: str):
    """A CrossEncoder with the init encoder's first `n_layers` layers and a fresh score head."""
    from sentence_transformers import CrossEncoder

    from lab_pipelines.models import resolve_model_dir

    torch.manual_seed(config.seed)  # the fresh head is random: seed it so runs repeat
    return CrossEncoder(str(resolve_model_dir(config.init_model)), num_labels=1,
                        max_length=config.max_length, device=device,
                        config_kwargs={"num_hidden_layers": config.n_layers})


def _group_scores(model, tokenizer, groups: Sequence[PseudoQuery], max_length: int,
                  device: str) -> torch.Tensor:
    """Scores of shape (n_groups, 1 + n_negatives); column 0 is the positive."""
    pairs = [(g.query, p) for g in groups for p in (g.positive, *g.negatives)]
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first",
                    max_length=max_length, padding=True, return_tensors="pt").to(device)
    return model(**enc).logits.view(len(groups), -1)


def group_accuracy(cross_encoder, groups: Sequence[PseudoQuery], batch_groups: int = 16) -> float:
    """Share of groups whose positive outscores every hard negative (chance: 1/(1+n_neg))."""
    model, tokenizer = cross_encoder.transformers_model, cross_encoder.tokenizer
    model.eval()
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(groups), batch_groups):
            batch = groups[i:i + batch_groups]
            scores = _group_scores(model, tokenizer, batch, cross_encoder.max_seq_length,
                                   str(cross_encoder.device))
            hits += int((scores.argmax(dim=1) == 0).sum())
    return hits / max(1, len(groups))


@dataclass
class TrainReport:
    n_train: int
    n_heldout: int
    steps: int
    train_seconds: float
    heldout_accuracy_before: float
    heldout_accuracy_after: float
    chance: float


def train_reranker(train: Sequence[PseudoQuery], heldout: Sequence[PseudoQuery],
                   config: RerankerConfig, device: str = "cpu"):
    """Fine-tune a cross-encoder on the groups; returns (CrossEncoder, TrainReport)."""
    if not train or not heldout:
        raise ValueError(f"Need train and held-out groups, got {len(train)} and {len(heldout)}.")
    configure_torch_for(device)
    cross_encoder = init_cross_encoder(config, device)
    model, tokenizer = cross_encoder.transformers_model, cross_encoder.tokenizer
    before = group_accuracy(cross_encoder, heldout)
    steps_per_epoch = -(-len(train) // config.batch_groups)
    total = steps_per_epoch * config.epochs
    # The score head starts random while the encoder is pretrained: a short run only gets the
    # head somewhere if it learns faster than the encoder it sits on.
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr},
                                   {"params": head, "lr": config.lr * config.head_lr_scale}],
                                  weight_decay=0.01)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup))))
    rng = random.Random(config.seed)
    started = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = list(train)
        rng.shuffle(order)
        for i in range(0, len(order), config.batch_groups):
            scores = _group_scores(model, tokenizer, order[i:i + config.batch_groups],
                                   config.max_length, device)
            # Listwise: softmax over positive + negatives, the positive is class 0.
            loss = torch.nn.functional.cross_entropy(
                scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        log.info("re-ranker epoch %d: last loss %.3f", epoch + 1, float(loss.detach()))
    seconds = time.perf_counter() - started
    after = group_accuracy(cross_encoder, heldout)
    report = TrainReport(n_train=len(train), n_heldout=len(heldout), steps=total,
                         train_seconds=seconds, heldout_accuracy_before=before,
                         heldout_accuracy_after=after, chance=1 / (1 + config.n_negatives))
    return cross_encoder, report


def save_reranker(cross_encoder, target: Path) -> Path:
    """Save into a temp folder and swap it in, so readers never see half a model."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cross_encoder.save_pretrained(str(tmp))
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


class Reranker:
    """Scores (query, passage) pairs with a CrossEncoder in fp32.

    Dynamic int8 quantization is off by default: measured on 40 held-out pseudo-query groups
    (this EPYC CPU), int8 scores had mean per-group Spearman 0.15 with the fp32 scores and the
    top passage agreed on only 30% of groups; bf16 autocast did little better (0.53, 50%). The
    score margins between passages are small, so reduced precision reorders them.
    """

    def __init__(self, cross_encoder, quantize_on_cpu: bool = False) -> None:
        self.cross_encoder = cross_encoder
        self.model = cross_encoder.transformers_model.eval()
        self.tokenizer = cross_encoder.tokenizer
        self.device = str(cross_encoder.device)
        if quantize_on_cpu and self.device == "cpu":
            # Opt-in only: faster, but it reorders small score margins (see the class docstring).
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, {torch.nn.Linear}, dtype=torch.qint8)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        enc = self.tokenizer([query] * len(passages), list(passages), truncation="longest_first",
                             max_length=self.cross_encoder.max_seq_length, padding=True,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return self.model(**enc).logits[:, 0].float().cpu().numpy()
