"""The gold QA set: loading, answer normalisation, and the one definition of a correct answer.

The benchmark scores a generated answer as correct when a normalised gold answer occurs in the
normalised prediction, and `scripts/verify_qa.py` checks each gold answer against its cited
page with the same functions, so "the answer is on the page" and "the model said it" agree.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

_REQUIRED = {"id": str, "question": str, "answers": list, "source": str, "page": int}
# An unanswerable question ("answerable": false) has no gold answer, source or page.
_REQUIRED_UNANSWERABLE = {"id": str, "question": str}

_SPACES = re.compile(r"\s+")


class QAFormatError(ValueError):
    """A QA file that does not follow the schema; the message names file and line."""


class UnknownSourceError(ValueError):
    """A QA `source` that names no stored PDF, or several; the message lists near matches."""


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]  # empty exactly when the library does not hold the answer
    source: str  # PDF file name (as the user has it, or as stored); "" when unanswerable
    page: int  # 1-based; 0 when unanswerable
    type: str = ""  # number | name | date | method | definition (dev set), free text otherwise

    @property
    def answerable(self) -> bool:
        """False for a question whose gold is "not in the library": only abstaining is right."""
        return bool(self.answers)


# How the library stores a PDF that came inside a package: PACKAGE__NAME.pdf.
STORED_SEPARATOR = "__"


def resolve_source(name: str, stored: Iterable[str]) -> str:
    """The stored file name a user's PDF name refers to.

    Tried in order: the exact name; the same name in any case; the part after `__` of a
    stored name (`relax.pdf` for `glmnet__relax.pdf`), in any case, when exactly one stored
    name has it. Anything else raises `UnknownSourceError` listing the near matches."""
    names = sorted(set(stored))
    if name in names:
        return name
    folded = name.casefold()
    for match in ([n for n in names if n.casefold() == folded],
                  [n for n in names if n.casefold().rpartition(STORED_SEPARATOR)[2] == folded]):
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise UnknownSourceError(f"{name!r} is ambiguous: it could be {', '.join(match)}; "
                                     "give the stored name")
    by_key = {n.casefold(): n for n in names}
    by_key.update({n.casefold().rpartition(STORED_SEPARATOR)[2]: n for n in names
                   if STORED_SEPARATOR in n})
    near = list(dict.fromkeys(by_key[k] for k in
                              difflib.get_close_matches(folded, by_key, n=5, cutoff=0.6)))
    hint = f"; near matches: {', '.join(near)}" if near else f"; the library has {len(names)} PDFs"
    raise UnknownSourceError(f"no PDF named {name!r} in the library{hint}")


def resolve_sources(items: Sequence[QAItem], stored: Iterable[str]) -> list[QAItem]:
    """`items` with every answerable `source` mapped to its stored name (`resolve_source`);
    the first that matches nothing raises, naming its question id."""
    names = sorted(set(stored))
    resolved = []
    for item in items:
        if not item.answerable:
            resolved.append(item)
            continue
        try:
            resolved.append(replace(item, source=resolve_source(item.source, names)))
        except UnknownSourceError as err:
            raise UnknownSourceError(f"{item.id}: {err}") from None
    return resolved


def _is_number_separator(text: str, i: int) -> bool:
    """A '.' or ',' between two digits is part of a number (0.05, 4.5, 1,000)."""
    return (
        text[i] in ".,"
        and 0 < i < len(text) - 1
        and text[i - 1].isdigit()
        and text[i + 1].isdigit()
    )


def normalize_answer(text: str) -> str:
    """NFKC, lower-case, punctuation and symbols to spaces (not inside numbers), one space."""
    text = unicodedata.normalize("NFKC", text).lower()
    chars = [
        " " if unicodedata.category(ch)[0] in "PS" and not _is_number_separator(text, i) else ch
        for i, ch in enumerate(text)
    ]
    return _SPACES.sub(" ", "".join(chars)).strip()


def answer_is_correct(prediction: str, answers: list[str] | tuple[str, ...]) -> bool:
    """True when any normalised gold answer occurs in the normalised prediction as whole tokens.

    Token boundaries stop "5" from matching inside "0.5" or "25", which plain substring
    containment would count as correct.
    """
    padded = f" {normalize_answer(prediction)} "
    return any((gold := normalize_answer(a)) and f" {gold} " in padded for a in answers)


@dataclass(frozen=True)
class Outcome:
    correct: bool
    abstained: bool  # declined a question the library answers
    hallucinated: bool  # stated something wrong, or anything at all on an unanswerable one


def score(item: QAItem, prediction: str, declined: bool) -> Outcome:
    """Right, abstained or hallucinated, the one scoring both benchmarks use. On a question
    the library cannot answer, declining is the right answer and any answer a hallucination."""
    if not item.answerable:
        return Outcome(correct=declined, abstained=False, hallucinated=not declined)
    correct = answer_is_correct(prediction, item.answers)
    return Outcome(correct, declined and not correct, not correct and not declined)


def eval_split(path: Path | str) -> str:
    """'dev' for a development set (the word `dev` in the file name: rag_dev.jsonl,
    claims_dev.jsonl), else 'test': knobs are chosen on dev, figures reported on test."""
    return "dev" if "dev" in re.split(r"[^a-z]+", Path(path).stem.lower()) else "test"


def contains_answer(text: str, answer: str) -> bool:
    """One gold answer occurs in `text` (normalised, whole tokens)."""
    return answer_is_correct(text, (answer,))


def _parse_line(raw: str, where: str) -> QAItem:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as err:
        raise QAFormatError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise QAFormatError(f"{where}: expected a JSON object")
    answerable = record.get("answerable", True)
    if not isinstance(answerable, bool):
        raise QAFormatError(f"{where}: field 'answerable' must be true or false, "
                            f"got {answerable!r}")
    if not answerable:
        return _parse_unanswerable(record, where)
    for key, kind in _REQUIRED.items():
        value = record.get(key)
        # bool is an int subclass; a page of `true` is still a schema error.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise QAFormatError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    answers = record["answers"]
    if not answers or not all(isinstance(a, str) and normalize_answer(a) for a in answers):
        raise QAFormatError(f"{where}: 'answers' must be a non-empty list of non-blank strings")
    if record["page"] < 1:
        raise QAFormatError(f"{where}: 'page' is 1-based, got {record['page']}")
    if not record["question"].strip():
        raise QAFormatError(f"{where}: 'question' is blank")
    return QAItem(
        id=record["id"],
        question=record["question"].strip(),
        answers=tuple(answers),
        source=record["source"],
        page=record["page"],
        type=str(record.get("type", "")),
    )


def _parse_unanswerable(record: dict, where: str) -> QAItem:
    for key, kind in _REQUIRED_UNANSWERABLE.items():
        if not isinstance(record.get(key), kind):
            raise QAFormatError(f"{where}: field {key!r} must be {kind.__name__}, "
                                f"got {record.get(key)!r}")
    if record.get("answers"):
        raise QAFormatError(f"{where}: an unanswerable question ('answerable': false) "
                            "takes no 'answers'")
    if not record["question"].strip():
        raise QAFormatError(f"{where}: 'question' is blank")
    return QAItem(id=record["id"], question=record["question"].strip(), answers=(),
                  source="", page=0, type=str(record.get("type", "")))


def load_qa(path: Path | str) -> list[QAItem]:
    """Read a QA JSONL file; a malformed line or a repeated id raises naming file and line."""
    path = Path(path)
    items: list[QAItem] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            item = _parse_line(raw, where)
            if item.id in first_line:
                raise QAFormatError(
                    f"{where}: duplicate id {item.id!r} (first on line {first_line[item.id]})"
                )
            first_line[item.id] = lineno
            items.append(item)
    if not items:
        raise QAFormatError(f"{path}: no questions")
    return items
