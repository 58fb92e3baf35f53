"""Rule-based corruptions and light paraphrases of corpus sentences (FactCC, Kryscinski et al.
2020): the raw material of both the claim set that measures the critic and the pairs that
train its classifier.

Each corruption mimics a confusion a reader really makes when it copies from a passage: the
wrong number, the wrong year, the wrong name, the wrong unit, a dropped or added negation,
two entities swapped in their roles. Each returns None when the sentence offers nothing to
corrupt that way, so a caller can try the next sentence.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from lab_pipelines.rag.grounding import STOPWORDS

YEAR = re.compile(r"\b(19[5-9]\d|20[0-3]\d)\b")
# A number that is not a year, not part of a word (P100, x2) and not a section/equation label.
_NUMBER = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)(?![\w.]\d|\.\w)")
# A name: a capitalised word inside a sentence, not a stopword (a sentence start says nothing).
_NAME = re.compile(r"(?<=[a-z,;:)] )([A-Z][a-zA-Z]{2,}(?:-[A-Z][a-zA-Z]+)?)\b")
# "no." followed by more text is the abbreviation of number ("maximum no. of iterations").
NEGATION = re.compile(r"\b(not|no(?!\.\s*\w)|never|none|nor|cannot|without)\b|n't\b",
                      re.IGNORECASE)
_AUXILIARY = re.compile(r"\b(is|are|was|were|can|does|do|did|has|have|will|should|may|could|"
                        r"would|must)\b")
# Units a reader confuses, each with the one it is mistaken for.
UNIT_SWAPS = {
    "million": "billion", "billion": "million", "thousand": "million", "percent": "points",
    "%": " points", "hours": "days", "days": "weeks", "weeks": "months", "months": "years",
    "years": "months", "minutes": "seconds", "seconds": "minutes", "ms": "s", "GB": "MB",
    "MB": "GB", "times": "percent", "observations": "variables", "variables": "observations",
    "rows": "columns", "columns": "rows", "steps": "epochs", "epochs": "steps",
    "iterations": "epochs", "layers": "heads", "heads": "layers", "samples": "features",
    "features": "samples", "subjects": "groups", "patients": "groups", "tokens": "words",
    "words": "tokens", "dimensions": "layers", "clusters": "groups", "groups": "clusters",
    "degrees": "percent", "units": "layers", "strategies": "examples", "examples": "strategies",
}
UNIT = re.compile(r"(\d(?:[\d.,]*\d)?)\s?(" + "|".join(
    re.escape(u) for u in sorted(UNIT_SWAPS, key=len, reverse=True)) + r")(?![\w])")

# Phrases a light paraphrase rewrites; none changes what the sentence asserts.
_PARAPHRASES = (
    (re.compile(r"^(However|Moreover|Furthermore|In addition|Thus|Therefore|Hence|Note that|"
                r"Also|Finally|Here|Similarly),?\s+", re.IGNORECASE), ""),
    (re.compile(r"\bwe\b"), "the authors"), (re.compile(r"\bWe\b"), "The authors"),
    (re.compile(r"\bour\b"), "their"), (re.compile(r"\bOur\b"), "Their"),
    (re.compile(r"\bin order to\b"), "to"), (re.compile(r"\butili[sz]e(s|d)?\b"), r"use\1"),
    (re.compile(r"\bcan be\b"), "may be"), (re.compile(r"\bi\.e\.,?"), "that is,"),
    (re.compile(r"\be\.g\.,?"), "for example,"), (re.compile(r"\bapproximately\b"), "about"),
    (re.compile(r"\s*\([^()\d]{3,60}\)"), ""),  # an aside in brackets without any figure
)


def numbers_in(sentence: str) -> list[re.Match]:
    """Number matches that are not years."""
    return [m for m in _NUMBER.finditer(sentence) if not YEAR.fullmatch(m.group(1))]


def names_in(sentence: str) -> list[str]:
    """Capitalised words inside a sentence that are not stopwords."""
    return [n for n in _NAME.findall(sentence) if n.lower() not in STOPWORDS]


def _other_number(raw: str, rng: random.Random) -> str:
    if "." in raw:
        whole, frac = raw.split(".")
        last = (int(frac[-1]) + rng.randint(1, 8)) % 10
        return f"{whole}.{frac[:-1]}{last}"
    value = int(raw)
    return str(value + rng.choice([1, 2, 3]) if value < 10 else value * rng.choice([2, 3])
               if value < 100 else value + 10 ** (len(raw) - 1) * rng.randint(1, 4))


def swap_number(sentence: str, rng: random.Random) -> str | None:
    found = numbers_in(sentence)
    if not found:
        return None
    m = rng.choice(found)
    return sentence[:m.start(1)] + _other_number(m.group(1), rng) + sentence[m.end(1):]


def swap_date(sentence: str, rng: random.Random) -> str | None:
    found = list(YEAR.finditer(sentence))
    if not found:
        return None
    m = rng.choice(found)
    year = int(m.group(1)) + rng.choice([-5, -3, -2, -1, 1, 2, 3, 4])
    return sentence[:m.start(1)] + str(year) + sentence[m.end(1):]


def swap_name(sentence: str, rng: random.Random, name_pool: Sequence[str]) -> str | None:
    """One name replaced by another from `name_pool` that the sentence does not hold."""
    found = names_in(sentence)
    candidates = [n for n in name_pool if n not in sentence]
    if not found or not candidates:
        return None
    old = rng.choice(found)
    return re.sub(rf"\b{re.escape(old)}\b", rng.choice(candidates), sentence, count=1)


def swap_unit(sentence: str, rng: random.Random) -> str | None:
    found = list(UNIT.finditer(sentence))
    if not found:
        return None
    m = rng.choice(found)
    return sentence[:m.start(2)] + UNIT_SWAPS[m.group(2)] + sentence[m.end(2):]


def flip_negation(sentence: str, rng: random.Random) -> str | None:
    """Drop the sentence's negation, or negate its first auxiliary verb."""
    negation = NEGATION.search(sentence)
    if negation and negation.group(0).lower() in ("not", "n't"):
        return (sentence[:negation.start()].rstrip() + " " + sentence[negation.end():].lstrip()
                ).replace(" ,", ",")
    if negation:
        return None  # "no", "never", "without": dropping them rarely leaves a sentence
    aux = _AUXILIARY.search(sentence)
    if aux is None:
        return None
    return sentence[:aux.end()] + " not" + sentence[aux.end():]


def swap_entities(sentence: str, rng: random.Random) -> str | None:
    """Two different names, or two different numbers, trade places (a role swap)."""
    names = list(dict.fromkeys(names_in(sentence)))
    if len(names) >= 2:
        a, b = rng.sample(names, 2)
        return re.sub(rf"\b({re.escape(a)}|{re.escape(b)})\b",
                      lambda m: b if m.group(1) == a else a, sentence)
    found = numbers_in(sentence)
    values = list(dict.fromkeys(m.group(1) for m in found))
    if len(values) >= 2:
        a, b = rng.sample(values, 2)
        out, last = [], 0
        for m in found:
            if m.group(1) in (a, b):
                out += [sentence[last:m.start(1)], b if m.group(1) == a else a]
                last = m.end(1)
        return "".join(out) + sentence[last:]
    return None


def paraphrase(sentence: str, rng: random.Random) -> str | None:
    """A light rewrite that keeps every fact; None when no rule applies."""
    out = sentence
    for pattern, replacement in _PARAPHRASES:
        out = pattern.sub(replacement, out)
    out = " ".join(out.split())
    if out == sentence:
        return None
    return out[0].upper() + out[1:]


Corruption = Callable[[str, random.Random], str | None]
CORRUPTIONS: dict[str, Corruption] = {
    "number": swap_number, "date": swap_date, "unit": swap_unit,
    "negation": flip_negation, "entity_swap": swap_entities,
}  # "name" needs a pool of names: see `corrupt`
PERTURBATIONS = ("number", "date", "name", "unit", "negation", "entity_swap")


def corrupt(kind: str, sentence: str, rng: random.Random,
            name_pool: Sequence[str] = ()) -> str | None:
    """The sentence corrupted in the way `kind` names, or None if it offers no such fact."""
    if kind == "name":
        out = swap_name(sentence, rng, name_pool)
    elif kind in CORRUPTIONS:
        out = CORRUPTIONS[kind](sentence, rng)
    else:
        raise ValueError(f"Unknown perturbation {kind!r}; choose from {PERTURBATIONS}.")
    return out if out and out != sentence else None
