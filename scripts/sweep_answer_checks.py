"""Choose the answer checks' thresholds (`min_alignment`, `min_confidence`) on the development
QA set: the reader answers each question once with the checks off (advanced and oracle), and
every pair of thresholds is applied to those recorded answers (`benchmark.recheck`), so the
sweep costs one generation per question. Prints accuracy and hallucination per pair.

    .venv/bin/python scripts/sweep_answer_checks.py --out /tmp/dev_answers.parquet
    .venv/bin/python scripts/sweep_answer_checks.py --from /tmp/dev_answers.parquet
    # the test set at the thresholds chosen on dev, never swept:
    .venv/bin/python scripts/sweep_answer_checks.py --qa-file data/eval/rag_qa.jsonl \
        --alignment 0.25 --confidence -0.4
    # another reader's thresholds (its wheels installed by hand):
    .venv/bin/python scripts/sweep_answer_checks.py --out /tmp/dev_1p5b.parquet \
        --generator packaged:Qwen2.5-Coder-1.5B-Instruct --dtype bfloat16

Needs the indexed library and the trained re-ranker (`make demo`).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace

import polars as pl

from lab_pipelines import machine, models, paths
from lab_pipelines.rag import ask, benchmark
from lab_pipelines.rag.answer import AnswerChecks
from lab_pipelines.rag.qa import eval_split, load_qa

ALIGNMENTS = (0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
CONFIDENCES = (None, -0.6, -0.5, -0.4, -0.3, -0.25, -0.2)


def record(items, methods: tuple[str, ...], generator_spec: str, dtype: str) -> pl.DataFrame:
    """Every answer with the checks off, for `recheck` to apply any thresholds to."""
    # `lab ask`'s loading: the re-ranker behind its quality gate, as the benchmark reads it.
    library = ask.open_library(paths.data_dir(), generator=generator_spec, dtype=dtype)
    print(f"reader: {generator_spec} ({dtype}); re-ranker: "
          f"{'gated in' if library.reranker else '; '.join(library.notes)}")
    config = replace(benchmark.BenchmarkConfig(), grounded=False, methods=methods)
    return benchmark.run_questions(items, library.generator, library.search, library.reranker,
                                   config, embed=library.embed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qa-file", default="data/eval/rag_dev.jsonl")
    parser.add_argument("--methods", nargs="+", default=list(benchmark.CHECKED))
    parser.add_argument("--every", type=int, default=1,
                        help="every n-th question only (a smaller sample that covers every paper)")
    parser.add_argument("--from", dest="source", help="recorded answers (Parquet) to re-check")
    parser.add_argument("--out", help="keep the recorded answers as Parquet")
    parser.add_argument("--alignment", type=float, help="report this min_alignment only")
    parser.add_argument("--confidence", type=float, help="report this min_confidence only")
    # Thresholds fit one reader's confidence scale, so a candidate reader is swept on its own.
    parser.add_argument("--generator", default=models.reader_default())
    parser.add_argument("--dtype", default="auto", choices=["auto", *models.DTYPES])
    args = parser.parse_args()
    items = load_qa(paths.REPO_ROOT / args.qa_file)[::args.every]
    print(f"{args.qa_file} (split {eval_split(args.qa_file)}), {len(items)} questions; "
          f"machine: {machine.describe()}")
    started = time.perf_counter()
    answers = (pl.read_parquet(args.source) if args.source
               else record(items, tuple(args.methods), args.generator, args.dtype))
    print(f"answers recorded in {time.perf_counter() - started:.0f} s")
    if args.out:
        answers.write_parquet(args.out)
    grid = ([(args.alignment, args.confidence)] if args.alignment is not None
            else itertools.product(ALIGNMENTS, CONFIDENCES))
    scored = []
    for alignment, confidence in grid:
        checks = AnswerChecks(min_alignment=alignment, min_confidence=confidence)
        summary = benchmark.summarize(benchmark.recheck(answers, items, checks))
        rows = {r["method"]: r for r in summary.iter_rows(named=True)}
        cells = "  ".join(f"{m} {r['accuracy']:.3f} / {r['hallucination_rate']:.3f}"
                          for m, r in rows.items())
        print(f"alignment {alignment:<4} confidence {confidence!s:<5}  {cells}  "
              "(accuracy / hallucination)")
        if "advanced" in rows:
            adv = rows["advanced"]
            oracle = rows.get("oracle", adv)
            # The rule the choice follows: advanced accuracy minus hallucination (a wrong
            # answer costs as much as a right one gains), the oracle's accuracy on a tie.
            scored.append((round(adv["accuracy"] - adv["hallucination_rate"], 6),
                           oracle["accuracy"], alignment, confidence))
    if len(scored) > 1:
        *_, alignment, confidence = max(scored, key=lambda s: (s[0], s[1]))
        print(f"chosen: alignment {alignment} confidence {confidence}")


if __name__ == "__main__":
    main()
