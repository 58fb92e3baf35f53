"""Is an answer backed by the passages the reader was shown?

An instruction-tuned reader almost never says "I don't know": handed a passage from the wrong
paper it still answers, and invents. A cheap lexical check catches most of that: every number
in the answer must occur in the passages, and at least half of its content words must too.
Answers that fail are withheld (replaced by an abstention) rather than shipped.

The same token view of text (`numbers`, `content_words`) is the base of ELEVATE's rule critic,
so "backed by the evidence" means one thing across the lab.

Words and numbers that occur somewhere in the passages are not yet an answer to the question:
a small reader's commonest error is the right kind of fact from the wrong sentence (the
English-French BLEU for the English-German one). `question_alignment` asks where the answer
was copied from, and how much of the question that sentence is about.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lab_pipelines.rag.qa import contains_answer
from lab_pipelines.rag.rerank import split_sentences

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
# Function words and answer boilerplate: their presence in a passage says nothing.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each either few for
from further had has have having he her here hers him his how i if in into is it its itself
just least less many may me might more most much must my no nor not of off on once one only or
other our ours out over own per same she should since so some such than that the their them
then there these they this those through thus to too under until up upon us use used uses using
very via was we were what when where which while who whom whose why will with within without
would yes yet you your answer answers passage passages question according based given named
called known described shown reported
""".split())


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


# Numbers written in words: a faithful rewording says "twelve hours" or "four point one" for
# "12 hours" and "4.1", and the checks must read both as the same number.
_UNITS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen"))}
_TENS = {w: 10 * (i + 2) for i, w in enumerate((
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
             "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "twelfth": 12,
             "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
             "sixtieth": 60, "seventieth": 70, "eightieth": 80, "ninetieth": 90,
             "hundredth": 100}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))
_SPELLED = re.compile(
    rf"\b(?:twice|(?:{_NUMBER_WORD})(?:[- ](?:{_NUMBER_WORD}))*"
    rf"(?: point(?: (?:{'|'.join(_UNITS)}))+| and a half)?"
    rf"|(?:(?:{'|'.join(_TENS)})-)?(?:{'|'.join(_ORDINALS)}))\b")


def _spelled_value(words: str) -> str | None:
    """The digits of a number written in words; None for a bare "one" (a pronoun as often
    as a number: "one could require ...") and for ordinals that are not counts ("second")."""
    if words == "twice":
        return "2"
    if words in ("one", "first", "second"):
        return None
    whole, _, rest = words.partition(" point ")
    half = whole.endswith(" and a half")
    whole = whole.removesuffix(" and a half")
    total = current = 0
    for word in re.split(r"[- ]", whole):
        word = {k: str(v) for k, v in _ORDINALS.items()}.get(word, word)
        if word.isdigit():
            current += int(word)
        elif word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        else:
            current = max(current, 1) * _SCALES[word]
            if word == "thousand":
                total, current = total + current, 0
    value = str(total + current)
    if rest:
        value += "." + "".join(str(_UNITS[w]) for w in rest.split())
    elif half:
        value += ".5"
    return value


def _spelled_numbers(text: str) -> set[str]:
    return {v for m in _SPELLED.finditer(text) if (v := _spelled_value(m.group(0)))}


def _canonical_number(raw: str) -> str:
    """'37,000' and '37000' are one number; '0.50' and '0.5' too; '4.5' keeps its point."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", raw):
        raw = raw.replace(",", "")
    raw = raw.replace(",", ".")
    if "." in raw:
        raw = raw.rstrip("0").rstrip(".") or "0"
    return re.sub(r"^0+(?=\d)", "", raw)


def numbers(text: str) -> set[str]:
    """The numbers in `text`, canonicalised, including those glued to letters (P100, 3e-4)
    and those written in words ("four point one" is 4.1)."""
    text = _normalise(text)
    return {_canonical_number(m) for m in _NUMBER.findall(text)} | _spelled_numbers(text)


def stem(word: str) -> str:
    """A light stem, enough that 'layers' meets 'layer' and 'estimated' meets 'estimates'."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stems of the words that carry meaning: no stopwords, nothing shorter than 3 letters."""
    # A number in words is a number, checked as one, not a content word that must recur.
    words = _WORD.findall(_SPELLED.sub(" ", _normalise(text)))
    return {stem(w) for w in words if len(w) >= 3 and w not in STOPWORDS}


@dataclass(frozen=True)
class Grounding:
    """Why an answer is, or is not, backed by the passages."""

    grounded: bool
    missing_numbers: tuple[str, ...]
    missing_words: tuple[str, ...]
    word_share: float  # share of the answer's content words found in the passages
    alignment: float | None = None  # `question_alignment`, when a question was given
    min_alignment: float = 0.0

    @property
    def reason(self) -> str:
        if self.grounded:
            return "backed by the passages"
        parts = []
        if self.missing_numbers:
            parts.append(f"numbers not in the passages: {', '.join(self.missing_numbers)}")
        if self.missing_words:
            parts.append(f"only {self.word_share:.0%} of its content words are in the passages "
                         f"(missing: {', '.join(self.missing_words[:6])})")
        if self.alignment is not None and self.alignment < self.min_alignment:
            parts.append(f"no sentence that holds the answer is about the question (best "
                         f"covers {self.alignment:.0%} of its content words)")
        return "; ".join(parts)


def _spans_holding(answer: str, passages: Iterable[str]) -> list[str]:
    """The passage sentences that hold the whole answer; failing those, pairs of neighbouring
    sentences (the splitter cuts at "Oct. 2015" and at initials, "H. Putter")."""
    split = [split_sentences(p) for p in passages]
    spans = [s for sentences in split for s in sentences if contains_answer(s, answer)]
    return spans or [pair for sentences in split
                     for pair in map(" ".join, zip(sentences, sentences[1:]))
                     if contains_answer(pair, answer)]


def question_alignment(question: str, answer: str, passages: Iterable[str]) -> float:
    """The largest share of the question's content words found in one passage sentence that
    holds the whole answer (normalised, whole tokens); 0.0 when no sentence holds it.

    A short extractive answer should be a span of a sentence about the question. One that is
    in no sentence was composed by the reader, and one whose sentence shares little with the
    question was most likely lifted from a neighbouring fact."""
    asked = content_words(question)
    if not asked:
        return 1.0
    return max((len(asked & content_words(span)) / len(asked)
                for span in _spans_holding(answer, passages)), default=0.0)


def check_grounding(answer: str, passages: Iterable[str], min_word_share: float = 0.5,
                    question: str | None = None, min_alignment: float = 0.0) -> Grounding:
    """Every number of `answer` occurs in the passages, and at least `min_word_share` of its
    content words do; with a `question`, the sentence the answer comes from also covers at
    least `min_alignment` of the question's content words (`question_alignment`). An answer
    with neither numbers nor content words is lexically grounded (there is nothing in it to
    invent)."""
    passages = list(passages)
    evidence = " ".join(passages)
    missing_numbers = tuple(sorted(numbers(answer) - numbers(evidence)))
    words = content_words(answer)
    missing_words = tuple(sorted(words - content_words(evidence)))
    share = 1.0 - len(missing_words) / len(words) if words else 1.0
    alignment = None if question is None else question_alignment(question, answer, passages)
    return Grounding(grounded=(not missing_numbers and share >= min_word_share
                               and (alignment is None or alignment >= min_alignment)),
                     missing_numbers=missing_numbers,
                     missing_words=missing_words if share < min_word_share else (),
                     word_share=share, alignment=alignment, min_alignment=min_alignment)


def ground_answer(answer: str, passages: Sequence[str], abstain: str,
                  min_word_share: float = 0.5, question: str | None = None,
                  min_alignment: float = 0.0) -> tuple[str, Grounding]:
    """The answer if it is grounded in the passages, else `abstain`; with the check's result."""
    result = check_grounding(answer, passages, min_word_share, question, min_alignment)
    return (answer if result.grounded else abstain), result
