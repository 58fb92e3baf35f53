"""Print the corpus pages a development question may be written from: every page of every
PDF in the papers folder except the pages the test set (data/eval/rag_qa.jsonl) cites, the
most prose-like first, as the project's extractor gives them (the text retrieval indexes).

    .venv/bin/python scripts/dev_pages.py [--per-pdf 3] [--chars 2600] > /tmp/pages.txt

This only helps a person write data/eval/rag_dev.jsonl by hand; the committed JSONL is the
development set, and `scripts/verify_qa.py --qa data/eval/rag_dev.jsonl` checks it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab_pipelines.paths import REPO_ROOT, data_dir
from lab_pipelines.rag.pdf_text import UnusablePdf, parse_pdf
from lab_pipelines.rag.qa import load_qa


def prose_chars(page: str) -> int:
    """Characters in long, mostly-letter lines: code listings and tables score low."""
    return sum(len(line) for line in page.split("\n")
               if len(line) > 60 and sum(c.isalpha() for c in line) > 0.75 * len(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=Path, default=data_dir() / "papers")
    parser.add_argument("--test", type=Path, default=REPO_ROOT / "data/eval/rag_qa.jsonl")
    parser.add_argument("--per-pdf", type=int, default=3)
    parser.add_argument("--chars", type=int, default=2600)
    args = parser.parse_args()
    test_pages = {(item.source, item.page) for item in load_qa(args.test)}
    for pdf in sorted(args.papers.glob("*.pdf")):
        try:
            pages = parse_pdf(pdf).pages
        except UnusablePdf as err:
            print(f"##### {pdf.name}: skipped ({err})\n")
            continue
        free = [(prose_chars(text), number) for number, text in enumerate(pages, start=1)
                if (pdf.name, number) not in test_pages]
        for _, number in sorted(sorted(free, reverse=True)[:args.per_pdf], key=lambda f: f[1]):
            print(f"##### {pdf.name} p{number}\n{pages[number - 1][:args.chars]}\n")


if __name__ == "__main__":
    main()
