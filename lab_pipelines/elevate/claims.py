"""An answer cut into atomic claims: sentences, then coordinated clauses, each keeping the
citation written after it.

The critic judges one fact at a time: a sentence "X has 6 layers and Y has 8" with one wrong
half must fail that half only, so the loop can correct or drop it and keep the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab_pipelines.rag.grounding import content_words, numbers
from lab_pipelines.rag.rerank import split_sentences

# A citation as the advanced reader writes it: "[file.pdf, p. 3]" or "(file.pdf, pp. 3-4)".
_CITATION = re.compile(r"\s*[\[(]([^\[\]()]*?\.pdf,\s*pp?\.\s*[\d\-–]+)[\])]")
# Clause boundaries: a semicolon, or ", and|but|while|whereas" (a comma before the
# conjunction marks a new clause, "A and B" alone is one noun phrase).
_CLAUSE = re.compile(r";\s+|,\s+(?:and|but|while|whereas)\s+")
MIN_CLAUSE_WORDS = 3
_MARK = "CITATIONMARK"
_MARKER = re.compile(_MARK + r"(\d+)")


@dataclass(frozen=True)
class Claim:
    text: str
    citation: str = ""  # the (file, page) the reader cited for it, if any


def _clauses(sentence: str) -> list[str]:
    parts = [p.strip(" ,;") for p in _CLAUSE.split(sentence)]
    # A fragment too short to assert anything stays with its neighbour.
    if len(parts) < 2 or any(len(p.split()) < MIN_CLAUSE_WORDS for p in parts):
        return [sentence]
    return [p if p.endswith((".", "!", "?")) else p + "." for p in parts]


def restates(claim: str, question: str) -> bool:
    """The claim says nothing the question did not: every word and number of it is the
    question's ("The vignette works through the tutorial by which first author.")."""
    return (content_words(claim) <= content_words(question)
            and numbers(claim) <= numbers(question))


def split_claims(answer: str, question: str = "") -> list[Claim]:
    """The answer's atomic claims in order; citations stay with the sentence they follow.
    With the question, sentences that only restate it are no claims."""
    citations = _CITATION.findall(answer)
    # Citations hold "p. 8", which reads as a sentence end: park them behind markers first.
    marked = answer
    for i in range(len(citations)):
        marked = _CITATION.sub(f" {_MARK}{i}", marked, count=1)
    claims = []
    for sentence in split_sentences(marked):
        cited = [citations[int(i)] for i in _MARKER.findall(sentence)]
        bare = " ".join(_MARKER.sub("", sentence).split()).replace(" .", ".")
        if not any(ch.isalnum() for ch in bare) or bare.endswith("?"):
            continue  # a question asserts nothing (small readers echo the question)
        claims += [Claim(c, "; ".join(cited)) for c in _clauses(bare)
                   if not (question and restates(c, question))]
    # A small reader sometimes repeats a sentence: one claim, however often it is said.
    return list({c.text: c for c in reversed(claims)}.values())[::-1]


def trim_unfinished(answer: str) -> str:
    """The answer without a last sentence cut off by the token limit, if others are whole."""
    sentences = split_sentences(answer)
    if len(sentences) > 1 and not sentences[-1].rstrip(" ])").endswith((".", "!", "?")):
        return " ".join(sentences[:-1])
    return answer


def join_claims(claims: list[Claim]) -> str:
    """Claims back into an answer, each citation after its claim."""
    return " ".join(f"{c.text} [{c.citation}]" if c.citation else c.text for c in claims)
