"""Check the gold RAG QA set against the PDFs it cites.

For every question: the schema holds, the id is unique, the cited PDF exists and parses (a
`source` may be the PDF's original name: `relax.pdf` for the stored `glmnet__relax.pdf`), the
page exists, and at least one gold answer occurs (normalised, as whole tokens) in the text that
the project's extractor gives for that page, which is the text retrieval indexes. A question
marked `"answerable": false` has no page to check; only its schema is. Because the
benchmark scores "gold answer contained in the model's answer", every gold answer must also be
at least two characters after normalisation and must not occur in its own question (a model
that echoes the question would otherwise score).

    .venv/bin/python scripts/verify_qa.py [--qa data/eval/rag_qa.jsonl] [--papers data/papers]
    .venv/bin/python scripts/verify_qa.py --qa data/eval/rag_dev.jsonl

Prints a count per source PDF and every failure; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from lab_pipelines.paths import REPO_ROOT, data_dir
from lab_pipelines.rag.pdf_text import UnusablePdf, parse_pdf
from lab_pipelines.rag.qa import (
    QAItem,
    UnknownSourceError,
    answer_is_correct,
    contains_answer,
    load_qa,
    normalize_answer,
    resolve_source,
)

MIN_ANSWER_CHARS = 2


def _scoring_hazards(item: QAItem) -> list[str]:
    """Gold answers that would make "contained in the prediction" a meaningless score."""
    problems = []
    for answer in item.answers:
        if len(normalize_answer(answer)) < MIN_ANSWER_CHARS:
            problems.append(
                f"{item.id}: answer {answer!r} is shorter than "
                f"{MIN_ANSWER_CHARS} characters after normalisation"
            )
        if contains_answer(item.question, answer):
            problems.append(f"{item.id}: answer {answer!r} already occurs in the question")
    return problems


def verify(items: list[QAItem], papers: Path) -> list[str]:
    """One message per problem found; empty when the set is sound."""
    failures: list[str] = []
    pages_by_source: dict[str, list[str] | str] = {}  # page texts, or why the PDF is unusable
    stored = [p.name for p in papers.glob("*.pdf")]
    for item in items:
        failures.extend(_scoring_hazards(item))
        if not item.answerable:
            continue
        try:
            source = resolve_source(item.source, stored)
        except UnknownSourceError as err:
            failures.append(f"{item.id}: {err}")
            continue
        if source not in pages_by_source:
            try:
                pages_by_source[source] = parse_pdf(papers / source).pages
            except UnusablePdf as err:
                pages_by_source[source] = f"unusable PDF: {err}"
        pages = pages_by_source[source]
        if isinstance(pages, str):
            failures.append(f"{item.id}: {papers / source}: {pages}")
        elif item.page > len(pages):
            failures.append(
                f"{item.id}: page {item.page} beyond {item.source} ({len(pages)} pages)"
            )
        elif not answer_is_correct(pages[item.page - 1], item.answers):
            failures.append(
                f"{item.id}: none of {list(item.answers)} on page {item.page} of {item.source}"
            )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qa", type=Path, default=REPO_ROOT / "data/eval/rag_qa.jsonl")
    parser.add_argument("--papers", type=Path, default=data_dir() / "papers")
    args = parser.parse_args(argv)

    try:
        items = load_qa(args.qa)
    except (OSError, ValueError) as err:
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    failures = verify(items, args.papers)

    counts = Counter(item.source for item in items if item.answerable)
    for source, n in sorted(counts.items()):
        print(f"{n:4d}  {source}")
    unanswerable = len(items) - sum(counts.values())
    if unanswerable:
        print(f"{unanswerable:4d}  (not in the library)")
    print(f"{len(items)} questions over {len(counts)} PDFs; {len(failures)} problems")
    for message in failures:
        print(f"FAIL {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
