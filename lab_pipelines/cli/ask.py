"""`lab ask "question"`: a cited answer from the paper library, verified claim by claim.

Runs `lab_pipelines.rag.ask.ask`, the pipeline the `library_answers` asset runs, on the index
and models under $LAB_DATA_DIR (what `make demo` built). Notes on fallbacks (no re-ranker, a
rules-only critic) and timings go to stderr, so `--json` output on stdout stays one object.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lab_pipelines.paths import data_dir

if TYPE_CHECKING:
    from lab_pipelines.rag.ask import Library, LibraryAnswer

HELP = "answer a question from your paper library, with (file, page) citations"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("-k", type=int, default=None,
                        help="passages in the reader's prompt (default: the benchmarked one)")
    parser.add_argument("--no-verify", action="store_true",
                        help="the advanced RAG answer alone, without ELEVATE's claim checks")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--generator", default=None,
                        help="reader model spec (default: the packaged reader)")
    parser.add_argument("--critic", default="rules", choices=("rules", "rules+classifier"),
                        help="claim checker (default: rules, the development set's choice)")


def render(answer: LibraryAnswer) -> str:
    """The answer as a researcher reads it in a terminal."""
    from lab_pipelines.rag.ask import NOT_IN_LIBRARY

    lines = [f"Q: {answer.question}"]
    if answer.abstained:
        lines.append(f"A: {NOT_IN_LIBRARY[0].upper()}{NOT_IN_LIBRARY[1:]}: no passage of the "
                     "indexed papers backs an answer.")
        if answer.closest:
            lines.append(f"   Closest passages: {'; '.join(answer.closest)}")
    else:
        lines.append(f"A: {answer.answer}")
    if answer.claims:
        checked = answer.method == "elevate"
        lines.append("Claims (checked by the critic):" if checked else
                     "Claims (not verified: --no-verify):")
        for claim in answer.claims:
            where = f"  [{claim.citation}]" if claim.citation else ""
            lines.append(f"  {claim.verdict:<12} {claim.text}{where}")
            if checked and not claim.shipped:
                why = (f'contradicted by "{claim.evidence}"' if claim.verdict == "contradicted"
                       and claim.evidence else claim.reason or "no passage backs it")
                lines.append(f"  {'':<12} dropped: {why}")
    if answer.citations:
        lines.append(f"Sources: {'; '.join(answer.citations)}")
    return "\n".join(lines)


@lru_cache(maxsize=2)
def _library(root: Path, generator: str | None, critic: str) -> Library:
    """Models load once per process, however many questions it asks."""
    # Imported here: `lab --help` and the other subcommands need no torch or LanceDB.
    from lab_pipelines.rag.ask import open_library

    return open_library(root, generator=generator, critic=critic)


def run(args: argparse.Namespace) -> int:
    from lab_pipelines.rag.ask import ask

    library = _library(data_dir(), args.generator, args.critic)
    answer = ask(args.question, library, k=args.k, verify=not args.no_verify)
    for note in library.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({**answer.to_dict(), "load_s": round(library.load_s, 2),
                          "generator": library.generator_spec, "notes": library.notes}))
    else:
        print(render(answer))
        rounds = f", {answer.rounds} rewrite(s)" if answer.rounds else ""
        print(f"({answer.method}{rounds}: {answer.seconds:.1f} s; models loaded in "
              f"{library.load_s:.1f} s)", file=sys.stderr)
    return 0
