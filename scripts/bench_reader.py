"""Measure reader settings on the gold QA set without Dagster: prompt format, dtype, context
compression, grounding. Prints the per-method summary; `--out` keeps every answer as Parquet.

    .venv/bin/python scripts/bench_reader.py --questions 30 --methods oracle advanced \
        --prompt-format chat --compress-to 6
Needs the indexed library (`make demo`, or materialize chunk_embeddings).
"""

from __future__ import annotations

import argparse
import time

import polars as pl
import torch

from lab_pipelines import models, paths
from lab_pipelines.rag import benchmark
from lab_pipelines.rag.generate import PROMPT_FORMATS, Generator
from lab_pipelines.rag.index import embed_texts
from lab_pipelines.rag.qa import load_qa
from lab_pipelines.rag.rerank import Reranker
from lab_pipelines.rag.search import PaperSearch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30, help="first N gold questions")
    parser.add_argument("--skip", type=int, default=0, help="start after this many questions")
    parser.add_argument("--methods", nargs="+", default=list(benchmark.METHODS))
    parser.add_argument("--generator", default=models.GENERATOR_DEFAULT)
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
    parser.add_argument("--reranker", default=str(paths.data_dir() / "models" / "reranker"),
                        help="CrossEncoder folder (default: the one reranker_model trained); "
                             "'none' keeps the hybrid order")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: as is)")
    parser.add_argument("--out", help="Parquet file for every answer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    items = load_qa(paths.REPO_ROOT / "data/eval/rag_qa.jsonl")[args.skip:args.skip + args.questions]
    model, tokenizer = models.load_causal_lm(args.generator, "cpu", paths.data_dir() / "models",
                                             args.dtype)
    generator = Generator(model, tokenizer, args.prompt_format, max_new_tokens=32)
    embedder = models.load_embedder()
    search = PaperSearch(paths.lancedb_uri(), lambda q: embed_texts(embedder, [q])[0])
    config = benchmark.BenchmarkConfig(top_n=args.top_n, compress_to=args.compress_to,
                                       read_reversed=not args.one_reading,
                                       grounded=not args.no_grounding,
                                       min_alignment=args.min_alignment,
                                       min_confidence=args.min_confidence,
                                       methods=tuple(args.methods))
    started = time.perf_counter()
    reranker = (None if args.reranker == "none" else
                Reranker(models.load_cross_encoder(args.reranker, "cpu"), bf16=True))
    answers = benchmark.run_questions(items, generator, search, reranker, config,
                                      embed=lambda texts: embed_texts(embedder, texts))
    print(f"{len(items)} questions in {time.perf_counter() - started:.0f} s; {vars(args)}")
    with pl.Config(tbl_cols=-1, tbl_width_chars=250, fmt_float="mixed"):
        print(benchmark.summarize(answers).drop("retrieval_p95_ms", "recall_at_5_before_rerank"))
    if args.out:
        answers.write_parquet(args.out)


if __name__ == "__main__":
    main()
