"""Write the ELEVATE claim set (data/eval/claims.jsonl) from the indexed library's chunks.

Usage: python scripts/make_claims.py [--chunks data/rag/chunks.parquet] [--out data/eval/claims.jsonl]

The papers it draws from are a fixed, seeded pick; the claim classifier never trains on them.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

import polars as pl

from lab_pipelines.elevate.claimset import build_claim_set, write_claims
from lab_pipelines.paths import REPO_ROOT

N_PAPERS = 10
PER_PERTURBATION = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=Path, default=REPO_ROOT / "data/rag/chunks.parquet")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data/eval/claims.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chunks = pl.read_parquet(args.chunks)
    files = sorted(set(chunks["file_name"]))
    random.Random(args.seed).shuffle(files)
    cases = build_claim_set(chunks, files[:N_PAPERS], PER_PERTURBATION, args.seed)
    write_claims(cases, args.out)
    print(f"{len(cases)} cases from {N_PAPERS} papers -> {args.out}")
    print(dict(Counter(c.perturbation for c in cases)))


if __name__ == "__main__":
    main()
