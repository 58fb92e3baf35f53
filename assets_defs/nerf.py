"""D-NeRF on D-NeRF-format scenes: two scenes the lab renders itself, a trained checkpoint
(`fast` or the paper's `dnerf`) and the benchmark that scores it. Thin wrappers around
`lab_pipelines.nerf`.

Assets hand data over through files under `lab.root()`: scenes in `scenes/<name>/`,
checkpoints in `nerf/checkpoints/`; `dnerf_checkpoint` points `nerf/active_checkpoint.json`
at what it trained, and `nerf_benchmark` evaluates that unless its config names another.
"""


import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

from assets_defs.resources import CardResource, LabResource
from lab_pipelines.nerf.benchmark import (
    BENCHMARK_COLUMNS,
    MethodRun,
    downscale_for,
    run_method,
    trivial_baselines,
)
from lab_pipelines.nerf.evaluate import evaluate
from lab_pipelines.nerf.panda import write_panda_walk
from lab_pipelines.nerf.scenes import load_split
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import METHODS, TrainConfig, load_checkpoint, result_from_checkpoint
from lab_pipelines.nerf.train import train as train_field
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.tables import append_rows, image_markdown, latest_run, markdown_table

# Training seconds per method when the run config leaves the budget at 0.
DEFAULT_BUDGET_S = {"embedded": 120.0, "gpu": 1800.0}


def _scene_metadata(folder: Path) -> dict:
    train = load_split(folder, "train")
    return {
        "scene_dir": dg.MetadataValue.path(str(folder)),
        "frames": {split: len(json.loads((folder / f"transforms_{split}.json").read_text())["frames"])
                   for split in ("train", "val", "test")},
        "resolution": f"{train.width}x{train.height}",
        "object_pixel_share": round(float((train.alphas > 0.5).float().mean()), 3),
        "first_frame": dg.MetadataValue.md(image_markdown((folder / "train" / "r_000.png").read_bytes(), "frame 0")),
    }


class SceneConfig(dg.Config):
    out_dir: str = ""  # empty: <lab root>/scenes/<scene name>
    size: int = 128  # stored width = height in pixels; train at a fraction via `resolution`
    n_train: int = 100
    n_val: int = 10
    n_test: int = 20
    seed: int = 0


def _write_scene(context: dg.AssetExecutionContext, config: SceneConfig, lab: LabResource,
                 name: str, writer) -> dg.MaterializeResult:
    folder = Path(config.out_dir) if config.out_dir else lab.root() / "scenes" / name
    writer(folder, config.size, config.n_train, config.n_val, config.n_test, seed=config.seed)
    context.log.info(f"{name} written to {folder}")
    return dg.MaterializeResult(metadata=_scene_metadata(folder))


@dg.asset(description="Analytic bouncing spheres, 100 timestamps, one hemisphere camera each, D-NeRF format.")
def bouncing_balls_scene(context: dg.AssetExecutionContext, config: SceneConfig,
                         lab: LabResource) -> dg.MaterializeResult:
    return _write_scene(context, config, lab, "bouncing_balls", write_bouncing_balls)


@dg.asset(description="panda3d's textured panda walk cycle rendered headless, D-NeRF format.")
def panda_walk_scene(context: dg.AssetExecutionContext, config: SceneConfig,
                     lab: LabResource) -> dg.MaterializeResult:
    return _write_scene(context, config, lab, "panda_walk", write_panda_walk)


class NerfTrainConfig(dg.Config):
    scene_dir: str = ""  # any D-NeRF-format folder; empty: the bouncing_balls_scene output
    method: str = "fast"  # 'fast' (factorised planes) or 'dnerf' (the paper's MLPs)
    budget_seconds: float = 0.0  # wall-clock training seconds; 0: the profile's default
    resolution: int = 64  # training/evaluation width in pixels; 0: as stored
    scene_radius: float = 1.5
    max_steps: int = 0
    seed: int = 0


def _pointer(lab: LabResource) -> Path:
    return lab.root() / "nerf" / "active_checkpoint.json"


def _train_config(config: NerfTrainConfig, lab: LabResource, scene_dir: Path, method: str) -> TrainConfig:
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {METHODS}")
    return TrainConfig(
        method=method, budget_seconds=config.budget_seconds or DEFAULT_BUDGET_S[lab.profile],
        downscale=downscale_for(scene_dir, config.resolution), scene_radius=config.scene_radius,
        profile=lab.profile, max_steps=config.max_steps, seed=config.seed,
    )


@dg.asset(deps=[bouncing_balls_scene], pool="gpu0",
          description="A deformable radiance field trained on one scene within a wall-clock budget; "
                      "resumes an interrupted run from its last checkpoint.")
def dnerf_checkpoint(context: dg.AssetExecutionContext, config: NerfTrainConfig, gpu0: CardResource,
                     gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    scene_dir = Path(config.scene_dir) if config.scene_dir else lab.root() / "scenes" / "bouncing_balls"
    cfg = _train_config(config, lab, scene_dir, config.method)
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    context.log.info(f"training {cfg.method} on {scene_dir} for {cfg.budget_seconds:.0f} s "
                     f"(canonical on {canonical}, deformation on {deformation})")
    result = train_field(
        scene_dir, lab.root() / "nerf" / "checkpoints", cfg, canonical, deformation,
        log=context.log.info)
    if result.start_step:
        context.log.info(f"resumed an interrupted run at step {result.start_step}")
    atomic_write_bytes(_pointer(lab), json.dumps({"checkpoint": str(result.checkpoint),
                                                  "scene_dir": str(scene_dir)}).encode())
    last = result.history[-1] if result.history else {}
    return dg.MaterializeResult(metadata={
        "checkpoint": dg.MetadataValue.path(str(result.checkpoint)),
        "method": cfg.method, "scene_dir": dg.MetadataValue.path(str(scene_dir)),
        "resolution": f"{result.resolution[1]}x{result.resolution[0]}",
        "steps": result.steps, "resumed_from_step": result.start_step,
        "train_seconds": round(result.train_seconds, 1), "rays_per_second": round(result.rays_per_second, 1),
        "last_batch_psnr": round(last.get("psnr", float("nan")), 2),
        "devices": f"canonical {canonical}, deformation {deformation}",
    })


class NerfBenchmarkConfig(NerfTrainConfig):
    checkpoint: str = ""  # empty: what dnerf_checkpoint trained last
    # Methods trained here from scratch on the same scene, budget and resolution as the
    # checkpoint, for the side-by-side table.
    compare_methods: list[str] = ["dnerf"]  # noqa: RUF012 (pydantic copies field defaults)


@dg.asset(deps=[dnerf_checkpoint], pool="gpu0",
          description="Test-split PSNR/SSIM of the trained field (and of other methods at the same "
                      "budget), rendered views and a time-sweep GIF; rows to DuckDB nerf_benchmark.")
def nerf_benchmark(context: dg.AssetExecutionContext, config: NerfBenchmarkConfig, gpu0: CardResource,
                   gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    if config.checkpoint:
        checkpoint = Path(config.checkpoint)
    elif _pointer(lab).is_file():
        checkpoint = Path(json.loads(_pointer(lab).read_text())["checkpoint"])
    else:
        raise FileNotFoundError(f"{_pointer(lab)} missing: materialize dnerf_checkpoint first")
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    trained = result_from_checkpoint(checkpoint)
    _, state = load_checkpoint(checkpoint)
    trained_cfg = TrainConfig(**state["train_config"])
    scene_dir = Path(config.scene_dir or state["scene_dir"])
    out_dir = lab.root() / "nerf"
    renders = out_dir / "renders" / f"{scene_dir.name}-{trained.method}"
    runs = [MethodRun(trained, evaluate(checkpoint, renders, scene_dir, canonical, deformation))]
    for method in config.compare_methods:
        if method == trained.method:
            continue
        if method not in METHODS:
            raise ValueError(f"compare_methods: {method!r} is not one of {METHODS}")
        context.log.info(f"training {method} for the side-by-side at {trained_cfg.budget_seconds:.0f} s")
        runs.append(run_method(scene_dir, out_dir, replace(trained_cfg, method=method), canonical, deformation,
                               log=context.log.info))
    baselines = trivial_baselines(scene_dir, trained_cfg.downscale)
    # The first run is the checkpoint under test; the others are there for comparison.
    rows = [{**run.row(scene_dir.name, canonical), **baselines, "role": "checkpoint" if i == 0 else "comparison"}
            for i, run in enumerate(runs)]
    append_rows("nerf_benchmark", rows, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=BENCHMARK_COLUMNS)
    metadata = {
        "table": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows), float_digits=3)),
        "best_psnr": max(r["psnr"] for r in rows),
        "mean_image_psnr": baselines["mean_image_psnr"],
    }
    for run in runs:
        method = run.trained.method
        metadata[f"{method}_test_views"] = dg.MetadataValue.md(
            image_markdown(run.evaluated.montage_png.read_bytes(), f"{method}: ground truth (top) vs render"))
        metadata[f"{method}_time_sweep"] = dg.MetadataValue.md(
            image_markdown(run.evaluated.time_sweep_gif.read_bytes(), f"{method}: time sweep", "image/gif"))
        metadata[f"{method}_renders"] = dg.MetadataValue.path(str(run.evaluated.montage_png.parent))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=nerf_benchmark, description="The trained checkpoint beats predicting the mean "
                "training image on the test split: it learnt the scene, not the background. "
                "Comparison methods are listed, not gated.")
def nerf_beats_mean_image(lab: LabResource) -> dg.AssetCheckResult:
    rows = latest_run("nerf_benchmark", lab.duckdb_path())
    if rows.is_empty():
        return dg.AssetCheckResult(passed=False, description="nerf_benchmark has no rows")
    gated = rows.filter(pl.col("role") == "checkpoint")
    return dg.AssetCheckResult(
        passed=not gated.is_empty() and bool((gated["psnr"] > gated["mean_image_psnr"]).all()),
        metadata={"table": dg.MetadataValue.md(markdown_table(
            rows.select("scene", "method", "role", "psnr", "ssim", "mean_image_psnr", "white_psnr")))},
    )
