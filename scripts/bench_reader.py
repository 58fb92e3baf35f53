"""Measure reader settings on a QA set without Dagster: the reader itself, prompt format,
dtype, context compression, grounding. Prints the per-method summary; `--out` keeps every
answer as Parquet. The development set is the default: knobs are chosen there, never on the
test set (`--qa-file data/eval/rag_qa.jsonl` reports it).

    .venv/bin/python scripts/bench_reader.py --questions 20 --methods advanced \
        --generator packaged:Qwen2.5-Coder-1.5B-Instruct --dtype bfloat16
    .venv/bin/python scripts/bench_reader.py --ask --questions 10   # `lab ask`'s latency

`--ask` times `lab ask`'s pipeline (lab_pipelines.rag.ask) on the first questions, without and
with ELEVATE's verification, and the model loading apart. Needs the indexed library (`make
demo`, or materialize chunk_embeddings).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from lab_pipelines import machine, models, paths
from lab_pipelines.rag import ask, benchmark
from lab_pipelines.rag.generate import PROMPT_FORMATS, Generator
from lab_pipelines.rag.qa import load_qa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa-file", default="data/eval/rag_dev.jsonl",
                        help="QA set, relative to the repository root (default: development)")
    parser.add_argument("--questions", type=int, default=30, help="first N questions")
    parser.add_argument("--skip", type=int, default=0, help="start after this many questions")
    parser.add_argument("--methods", nargs="+", default=list(benchmark.METHODS))
    parser.add_argument("--generator", default=models.reader_default())
    parser.add_argument("--dtype", default="auto", choices=["auto", *models.DTYPES])
    parser.add_argument("--prompt-format", default="completion", choices=PROMPT_FORMATS)
    parser.add_argument("--compress-to", type=int, default=benchmark.BenchmarkConfig.compress_to)
    parser.add_argument("--top-n", type=int, default=benchmark.BenchmarkConfig.top_n)
    parser.add_argument("--min-confidence", type=float,
                        default=benchmark.BenchmarkConfig.min_confidence)
    parser.add_argument("--min-alignment", type=float,
                        default=benchmark.BenchmarkConfig.min_alignment)
    parser.add_argument("--one-reading", action="store_true",
                        help="read the passages in rank order only, not also reversed")
    parser.add_argument("--no-grounding", action="store_true")
    parser.add_argument("--reranker", default="",
                        help="CrossEncoder folder (default: the one reranker_model trained, if "
                             "its quality gate lets it in); 'none' keeps the hybrid order")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: as is)")
    parser.add_argument("--out", help="Parquet file for every answer")
    parser.add_argument("--ask", action="store_true",
                        help="time lab ask's pipeline, without and with verification")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    qa_file = paths.REPO_ROOT / args.qa_file
    items = load_qa(qa_file)[args.skip:args.skip + args.questions]
    print(f"{len(items)} questions of {qa_file.name}; {machine.describe()}")
    if args.ask:
        time_ask([item.question for item in items], args.generator)
        return
    library = ask.open_library(paths.data_dir(), generator=args.generator,
                               reranker=args.reranker, dtype=args.dtype)
    generator = Generator(library.generator.model, library.generator.tokenizer,
                          args.prompt_format, max_new_tokens=32)
    config = benchmark.BenchmarkConfig(top_n=args.top_n, compress_to=args.compress_to,
                                       read_reversed=not args.one_reading,
                                       grounded=not args.no_grounding,
                                       min_alignment=args.min_alignment,
                                       min_confidence=args.min_confidence,
                                       methods=tuple(args.methods))
    started = time.perf_counter()
    answers = benchmark.run_questions(items, generator, library.search, library.reranker, config,
                                      embed=library.embed)
    print(f"{len(items)} questions in {time.perf_counter() - started:.0f} s; {vars(args)}")
    with pl.Config(tbl_cols=-1, tbl_width_chars=250, fmt_float="mixed"):
        print(benchmark.summarize(answers).drop("retrieval_p95_ms", "recall_at_5_before_rerank"))
    if args.out:
        answers.write_parquet(args.out)


def time_ask(questions: list[str], generator: str) -> None:
    """p50/p95 of `ask` per question without and with verification, after one model load."""
    library = ask.open_library(paths.data_dir(), generator=generator)
    print(f"models loaded in {library.load_s:.1f} s ({library.generator_spec}); notes: "
          f"{library.notes or '-'}")
    for verify in (False, True):
        answers = [ask.ask(q, library, verify=verify) for q in questions]
        seconds = np.array([a.seconds for a in answers])
        answered = sum(not a.abstained for a in answers)
        print(f"verify={verify}: p50 {np.percentile(seconds, 50):.2f} s, p95 "
              f"{np.percentile(seconds, 95):.2f} s, max {seconds.max():.2f} s over "
              f"{len(answers)} questions, {answered} answered")


if __name__ == "__main__":
    main()
