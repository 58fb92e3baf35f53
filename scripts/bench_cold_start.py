"""The strict cold start over seeds without Dagster: `recsys_cold_start_seeds`' cold-user half
for a dataset whose seed runs (`recsys_seed_benchmark`) have not been trained, with CMC capped
in minutes so ML-1M's three seeds fit an hour-scale budget. SVD is tuned on each cold split's
own validation slice. Rows go to the `recsys_cold_start` table (protocol `cold_users`); the
per-seed CMC-vs-SVD comparison and the mean over seeds are printed as Markdown.

    flock /tmp/lab-bench.lock .venv/bin/python scripts/bench_cold_start.py \
        --dataset ml-1m --seeds 0 1 2 --max-minutes 8
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl

from lab_pipelines import machine, paths
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.cold_start import COLUMNS, KS, plot_png, run_cold_start, summary_table
from lab_pipelines.recsys.data import packaged_ratings
from lab_pipelines.tables import append_rows, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-100k", "ml-1m"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--max-minutes", type=float, default=8.0, help="CMC's cap per seed")
    parser.add_argument("--max-epochs", type=int, default=3000)
    args = parser.parse_args()
    run_id = "bench-cold-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    print(f"{run_id} on {machine.describe()}")
    cmc = replace(CMCConfig(), max_epochs=args.max_epochs, max_minutes=args.max_minutes)
    ratings = packaged_ratings(args.dataset)
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        run = run_cold_start(args.dataset, seed, cmc, None, "cpu", args.ks, ratings)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s, CMC best val RMSE "
              f"{run.cmc_val_rmse:.4f}, SVD {run.svd}")
        rows += run.rows
        # Each seed lands as it finishes, so a stopped run keeps what it measured.
        append_rows("recsys_cold_start", pl.DataFrame(rows, infer_schema_length=None),
                    run_id=run_id, db_path=paths.duckdb_path(), required=COLUMNS,
                    replace_matching=("dataset", "protocol", "seed"))
    frame = pl.DataFrame(rows, infer_schema_length=None)
    per_seed = (frame.filter(pl.col("model").is_in(["svd_tuned", "cmc"]))
                .pivot(on="model", index=["seed", "k"], values=["rmse", "recall_at_10"])
                .sort("seed", "k"))
    print(markdown_table(per_seed, float_digits=4))
    print(markdown_table(summary_table(frame), float_digits=4))
    png = paths.data_dir() / "recsys" / f"cold_start_{args.dataset}_{run_id}.png"
    atomic_write_bytes(png, plot_png(frame, f"Strict cold start, {args.dataset}"))
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
