"""The claim set that measures the critic: (evidence, claim, label, perturbation) cases written
from the corpus, and the critic's accuracy on it.

Evidence is a whole indexed chunk, as the critic sees retrieved passages. Half the cases are
supported (a sentence of the chunk verbatim or lightly paraphrased), the other half are not:
one corruption of a sentence per confusion a reader makes (number, date, name, unit, negation,
entity swap; "contradicted") and sentences from elsewhere in the library ("unsupported"). The
papers the set is written from are recorded (`source`) and kept out of the classifier's
training data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lab_pipelines.elevate.classifier import name_pool, usable_sentence
from lab_pipelines.elevate.critic import LABELS, ClaimVerdict
from lab_pipelines.elevate.perturb import PERTURBATIONS, corrupt, paraphrase
from lab_pipelines.rag.rerank import split_sentences

SUPPORTED_KINDS = ("verbatim", "paraphrase")


@dataclass(frozen=True)
class ClaimCase:
    evidence: str
    claim: str
    label: str
    perturbation: str  # verbatim | paraphrase | one of PERTURBATIONS | unrelated
    source: str = ""  # the paper the evidence comes from
    # claims_dev.jsonl: how the claim rewords its evidence (voice, synonyms, reorder,
    # number_words, merge); empty in the test set, whose claims are verbatim or lightly edited
    rewording: str = ""


def load_claims(path: Path | str) -> list[ClaimCase]:
    """Read a claims JSONL; a line without the four fields or with an unknown label raises
    naming file and line."""
    cases = []
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        record = json.loads(raw)
        missing = {"evidence", "claim", "label", "perturbation"} - set(record)
        if missing or record["label"] not in LABELS:
            raise ValueError(f"{path}:{lineno}: needs evidence, claim, perturbation and a label "
                             f"in {LABELS} (missing {sorted(missing)}, label "
                             f"{record.get('label')!r})")
        cases.append(ClaimCase(**{k: record.get(k, "") for k in ClaimCase.__dataclass_fields__}))
    return cases


def write_claims(cases: Sequence[ClaimCase], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in cases),
                    encoding="utf-8")


def build_claim_set(chunks: pl.DataFrame, files: Sequence[str], per_perturbation: int,
                    seed: int = 0) -> list[ClaimCase]:
    """Cases from the chunks of `files`: `per_perturbation` of each corruption, as many
    unrelated claims, and as many supported ones (half paraphrased) as all of those together,
    so supported and not-supported are balanced."""
    rng = random.Random(seed)
    rows = [r for r in chunks.select("file_name", "chunk_index", "text").iter_rows(named=True)
            if r["file_name"] in set(files)]
    names = name_pool(chunks["text"])
    rng.shuffle(rows)
    kinds = [*PERTURBATIONS, "unrelated"]
    quota = {k: per_perturbation for k in kinds}
    quota["verbatim"] = quota["paraphrase"] = len(kinds) * per_perturbation // 2
    cases: list[ClaimCase] = []
    for row in rows:
        sentences = [s for s in split_sentences(row["text"]) if usable_sentence(s)]
        if not sentences:
            continue
        rng.shuffle(sentences)
        # The scarcest kind any sentence of this chunk allows, so rare facts (units, years)
        # fill first; one case per chunk keeps the evidence varied.
        for kind in sorted((k for k in quota if quota[k] > 0), key=lambda k: quota[k]):
            found = next(((s, c) for s in sentences
                          if (c := _claim(kind, s, row, rows, rng, names)) is not None), None)
            if found is not None:
                label = ("supported" if kind in SUPPORTED_KINDS else
                         "unsupported" if kind == "unrelated" else "contradicted")
                cases.append(ClaimCase(" ".join(row["text"].split()), found[1], label, kind,
                                       row["file_name"]))
                quota[kind] -= 1
                break
        if not any(quota.values()):
            break
    return cases


def _claim(kind: str, sentence: str, row: dict, rows: list[dict], rng: random.Random,
           names: Sequence[str]) -> str | None:
    if kind == "verbatim":
        return sentence
    if kind == "paraphrase":
        return paraphrase(sentence, rng)
    if kind == "unrelated":
        # A sentence from another chunk of the same paper, far from this one: on topic,
        # plausible, and not what this evidence says.
        far = [r for r in rows if r["file_name"] == row["file_name"]
               and abs(r["chunk_index"] - row["chunk_index"]) > 3]
        options = [s for r in far[:5] for s in split_sentences(r["text"]) if usable_sentence(s)]
        return rng.choice(options) if options else None
    return corrupt(kind, sentence, rng, names)


def balanced_accuracy(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    """Mean of the recall on supported and on not-supported claims."""
    t, p = np.asarray(truth, bool), np.asarray(predicted, bool)
    return float(np.mean([np.mean(p[t] == t[t]), np.mean(p[~t] == t[~t])]))


def evaluate_critic(verify: Callable[[str, list[str]], ClaimVerdict],
                    cases: Sequence[ClaimCase]) -> tuple[dict[str, float], pl.DataFrame]:
    """({"balanced_accuracy", "label_accuracy"}, per-perturbation accuracy of the verified /
    not-verified decision). `label_accuracy` asks for the exact three-way label."""
    verdicts = [verify(c.claim, [c.evidence]) for c in cases]
    truth = [c.label == "supported" for c in cases]
    said = [v.verified for v in verdicts]
    frame = pl.DataFrame({"perturbation": [c.perturbation for c in cases],
                          "right": [a == b for a, b in zip(truth, said, strict=True)]})
    per = (frame.group_by("perturbation").agg(pl.len().alias("n"),
                                              pl.col("right").mean().alias("accuracy"))
           .sort("perturbation"))
    overall = {"balanced_accuracy": balanced_accuracy(truth, said),
               "label_accuracy": float(np.mean([v.label == c.label
                                                for v, c in zip(verdicts, cases, strict=True)]))}
    return overall, per
