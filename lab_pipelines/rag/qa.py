"""The gold QA set: loading, answer normalisation, and the one definition of a correct answer.

The benchmark scores a generated answer as correct when a normalised gold answer occurs in the
normalised prediction, and `scripts/verify_qa.py` checks each gold answer against its cited
page with the same functions, so "the answer is on the page" and "the model said it" agree.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

_REQUIRED = {"id": str, "question": str, "answers": list, "source": str, "page": int}

_SPACES = re.compile(r"\s+")


class QAFormatError(ValueError):
    """A QA file that does not follow the schema; the message names file and line."""


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    source: str  # PDF file name inside the papers folder
    page: int  # 1-based


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
    )


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
