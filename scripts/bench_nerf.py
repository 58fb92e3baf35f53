"""Side-by-side D-NeRF benchmark: `fast` vs `dnerf` for fixed steps on one or more scenes;
rows go to the DuckDB table `nerf_benchmark` and a Markdown table to stdout.

Heavy: run it alone, e.g.
    flock /tmp/lab-bench.lock .venv/bin/python scripts/bench_nerf.py --resolution 64
(the profile's default steps per method; `--iterations N` for all methods, `--focus 0` for
uniform ray batches, the importance-sampling ablation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

from lab_pipelines.nerf.benchmark import (
    BENCHMARK_COLUMNS,
    downscale_for,
    side_by_side,
)
from lab_pipelines.nerf.panda import write_panda_walk
from lab_pipelines.nerf.scenes import write_scene_once
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import TrainConfig, default_iterations
from lab_pipelines.paths import data_dir, duckdb_path
from lab_pipelines.tables import append_rows, markdown_table

MAKERS = {"bouncing_balls": write_bouncing_balls, "panda_walk": write_panda_walk}


def scene_folder(name: str, size: int) -> Path:
    """A scene by name (made under data/scenes/ when missing) or any D-NeRF-format folder."""
    if name not in MAKERS:
        return Path(name)
    folder = data_dir() / "scenes" / name
    write_scene_once(folder, MAKERS[name], size=size)
    return folder


def _print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=["bouncing_balls"],
                        help="bouncing_balls, panda_walk, or a path to a D-NeRF-format folder")
    parser.add_argument("--methods", nargs="+", default=["fast", "dnerf"])
    parser.add_argument("--iterations", type=int, default=0,
                        help="steps per method (0: the profile's default for each method)")
    parser.add_argument("--budget", type=float, default=0.0, help="optional cap on training seconds (0: none)")
    parser.add_argument("--focus", type=float, default=0.5,
                        help="share of each batch drawn by spatio-temporal importance (0: uniform)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--stored-size", type=int, default=128, help="size to render made-here scenes at")
    parser.add_argument("--profile", default="embedded", choices=["embedded", "gpu"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    run_id = f"bench-nerf-{time.strftime('%Y%m%dT%H%M%S')}"
    out_dir = data_dir() / "nerf" / run_id
    rows = []
    for name in args.scenes:
        scene_dir = scene_folder(name, args.stored_size)
        base = TrainConfig(budget_seconds=args.budget, downscale=downscale_for(scene_dir, args.resolution),
                           profile=args.profile, focus=args.focus, seed=args.seed, log_every=200)
        steps = (lambda _: args.iterations) if args.iterations else (lambda m: default_iterations(m, args.profile))
        for run in side_by_side(scene_dir, out_dir, args.methods, base, args.device, on_log=_print_json,
                                iterations=steps):
            row = {**run.row(args.device), "role": "side_by_side"}
            print(json.dumps(row), flush=True)
            rows.append(row)
    append_rows("nerf_benchmark", rows, run_id=run_id, db_path=duckdb_path(), required=BENCHMARK_COLUMNS)
    print(markdown_table(pl.DataFrame(rows), float_digits=3))
    print(f"run_id {run_id}; renders under {out_dir}")


if __name__ == "__main__":
    main()
