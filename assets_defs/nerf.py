"""D-NeRF on D-NeRF-format scenes: two scenes the lab renders itself, checkpoints of both
methods (`fast` and the paper's `dnerf`) on both, the benchmark that scores them and the
renders that show them. Thin wrappers around `lab_pipelines.nerf`.

Assets hand data over through files under `lab.root()`: scenes in `scenes/<name>/`,
checkpoints in `nerf/checkpoints/`, listed by `dnerf_checkpoint` in `nerf/checkpoints.json`,
which `nerf_benchmark` scores and `dnerf_render` renders to `renders/<scene>/<method>/`.
Budgets are steps (`iterations`), so the table is the same on a busy machine.
"""


import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets_defs.resources import CardResource, LabResource
from lab_pipelines.nerf.benchmark import (
    BENCHMARK_COLUMNS,
    MethodRun,
    TrainJob,
    downscale_for,
    read_manifest,
    score_checkpoint,
    train_all,
    train_and_score,
    trainings_at_once,
    write_manifest,
)
from lab_pipelines.nerf.panda import write_panda_walk
from lab_pipelines.nerf.renders import render_checkpoint
from lab_pipelines.nerf.scenes import load_split, scene_fingerprint, write_scene_once
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import METHODS, TrainConfig, default_iterations
from lab_pipelines.tables import append_rows, image_markdown, latest_run, markdown_table

MADE_SCENES = ("bouncing_balls", "panda_walk")  # what the two scene assets write


def _scene_metadata(folder: Path) -> dict:
    train = load_split(folder, "train")
    return {
        "scene_dir": dg.MetadataValue.path(str(folder)),
        "frames": {split: len(json.loads((folder / f"transforms_{split}.json").read_text())["frames"])
                   for split in ("train", "val", "test")},
        "resolution": f"{train.width}x{train.height}",
        "scene_sha": scene_fingerprint(folder),
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
    wrote = write_scene_once(folder, writer, size=config.size, n_train=config.n_train, n_val=config.n_val,
                             n_test=config.n_test, seed=config.seed)
    context.log.info(f"{name} {'written to' if wrote else 'already current in'} {folder}")
    return dg.MaterializeResult(metadata={**_scene_metadata(folder), "rewritten": wrote})


@dg.asset(description="Analytic bouncing spheres, 100 timestamps, one hemisphere camera each, D-NeRF format.")
def bouncing_balls_scene(context: dg.AssetExecutionContext, config: SceneConfig,
                         lab: LabResource) -> dg.MaterializeResult:
    return _write_scene(context, config, lab, "bouncing_balls", write_bouncing_balls)


@dg.asset(description="panda3d's textured panda walk cycle rendered headless, D-NeRF format.")
def panda_walk_scene(context: dg.AssetExecutionContext, config: SceneConfig,
                     lab: LabResource) -> dg.MaterializeResult:
    return _write_scene(context, config, lab, "panda_walk", write_panda_walk)


class NerfTrainConfig(dg.Config):
    # D-NeRF-format folders; empty: the two scenes the scene assets wrote.
    scene_dirs: list[str] = []  # noqa: RUF012 (pydantic copies field defaults)
    methods: list[str] = ["fast", "dnerf"]  # noqa: RUF012
    iterations: int = 0  # Adam steps per method; 0: the profile's default for each method
    budget_seconds: float = 0.0  # optional cap on training seconds per method; 0: none
    resolution: int = 64  # training/evaluation width in pixels; 0: as stored
    scene_radius: float = 1.5
    focus: float = 0.5  # share of each ray batch drawn by spatio-temporal importance (0: uniform)
    seed: int = 0


def _manifest(lab: LabResource) -> Path:
    return lab.root() / "nerf" / "checkpoints.json"


def _scene_dirs(config: NerfTrainConfig, lab: LabResource) -> list[Path]:
    if config.scene_dirs:
        return [Path(d) for d in config.scene_dirs]
    return [lab.root() / "scenes" / name for name in MADE_SCENES]


def _train_config(config: NerfTrainConfig, lab: LabResource, scene_dir: Path, method: str) -> TrainConfig:
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {METHODS}")
    return TrainConfig(
        method=method, iterations=config.iterations or default_iterations(method, lab.profile),
        budget_seconds=config.budget_seconds,
        downscale=downscale_for(scene_dir, config.resolution),
        scene_radius=config.scene_radius, profile=lab.profile, focus=config.focus, seed=config.seed,
    )


@dg.asset(deps=[bouncing_balls_scene, panda_walk_scene], pool="gpu0",
          description="Deformable radiance fields, every method on every scene, each trained for a "
                      "fixed number of steps; resumes an interrupted run from its last checkpoint.")
def dnerf_checkpoint(context: dg.AssetExecutionContext, config: NerfTrainConfig, gpu0: CardResource,
                     gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    jobs = [TrainJob(scene_dir, _train_config(config, lab, scene_dir, method))
            for scene_dir in _scene_dirs(config, lab) for method in config.methods]
    context.log.info(f"training {len(jobs)} fields, "
                     f"{trainings_at_once(jobs, canonical)} at once "
                     f"(canonical on {canonical}, deformation on {deformation}): "
                     + ", ".join(f"{job.cfg.method} on {job.scene_dir.name} for {job.cfg.iterations} steps"
                                 for job in jobs))
    results = train_all(jobs, lab.root() / "nerf" / "checkpoints", canonical, deformation, log=context.log.info)
    entries, rows = [], []
    for job, result in zip(jobs, results):
        scene, method = job.scene_dir.name, job.cfg.method
        if result.start_step:
            context.log.info(f"{scene} {method}: resumed an interrupted run at step {result.start_step}")
        entries.append({"scene": scene, "method": method, "checkpoint": str(result.checkpoint),
                        "scene_dir": str(job.scene_dir)})
        rows.append({"scene": scene, "method": method,
                     "resolution": f"{result.resolution[1]}x{result.resolution[0]}", "steps": result.steps,
                     "train_seconds": round(result.train_seconds, 1),
                     "rays_per_second": round(result.rays_per_second, 1),
                     "last_batch_psnr": round(result.history[-1]["psnr"], 2) if result.history else None})
    write_manifest(_manifest(lab), entries)
    return dg.MaterializeResult(metadata={
        "checkpoints": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows), float_digits=2)),
        "manifest": dg.MetadataValue.path(str(_manifest(lab))),
        "devices": f"canonical {canonical}, deformation {deformation}",
    })


class NerfBenchmarkConfig(dg.Config):
    # Empty: every checkpoint dnerf_checkpoint trained.
    checkpoints: list[str] = []  # noqa: RUF012


def _checkpoints(config: NerfBenchmarkConfig, lab: LabResource) -> list[Path]:
    if config.checkpoints:
        return [Path(c) for c in config.checkpoints]
    return [Path(entry["checkpoint"]) for entry in read_manifest(_manifest(lab))]


def _benchmark(context: dg.AssetExecutionContext, runs: list[MethodRun], device: str, lab: LabResource,
               role: str) -> dg.MaterializeResult:
    """Rows of scored runs to DuckDB `nerf_benchmark`, and the metadata that shows them."""
    rows = [{**run.row(device), "role": role} for run in runs]
    append_rows("nerf_benchmark", rows, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=BENCHMARK_COLUMNS)
    shown = pl.DataFrame(rows).select(*BENCHMARK_COLUMNS, "mean_image_psnr")
    metadata = {"table": dg.MetadataValue.md(markdown_table(shown, float_digits=3)),
                "best_psnr": max(r["psnr"] for r in rows)}
    for run in runs:
        name = f"{run.scene_dir.name}_{run.trained.method}"
        metadata[f"{name}_test_views"] = dg.MetadataValue.md(image_markdown(
            run.evaluated.montage_png.read_bytes(), f"{name}: ground truth (top) vs render"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(deps=[dnerf_checkpoint], pool="gpu0",
          description="Test-split PSNR/SSIM of every trained checkpoint, with the steps, training "
                      "seconds and rays/s it took; rows to DuckDB nerf_benchmark.")
def nerf_benchmark(context: dg.AssetExecutionContext, config: NerfBenchmarkConfig, gpu0: CardResource,
                   gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    runs = []
    for checkpoint in _checkpoints(config, lab):
        out = lab.root() / "nerf" / "renders" / checkpoint.stem
        runs.append(score_checkpoint(checkpoint, out, None, canonical, deformation))
    return _benchmark(context, runs, canonical, lab, "checkpoint")


class RenderConfig(dg.Config):
    frames: int = 24  # orbit frames (t runs 0 -> 1 over them)
    resolution: int = 0  # orbit width in pixels; 0: the training resolution
    test_views: int = 4  # rows of the ground truth | prediction | error grid


@dg.asset(deps=[dnerf_checkpoint], pool="gpu0",
          description="Per checkpoint, under renders/<scene>/<method>/: test views beside ground truth "
                      "and their error, an orbit video while t runs 0 -> 1 (MP4, GIF without ffmpeg) "
                      "and its disparity.")
def dnerf_render(context: dg.AssetExecutionContext, config: RenderConfig, gpu0: CardResource,
                 gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    metadata: dict = {}
    for entry in read_manifest(_manifest(lab)):
        out = lab.root() / "renders" / entry["scene"] / entry["method"]
        result = render_checkpoint(entry["checkpoint"], out, config.frames, config.resolution, config.test_views,
                                   canonical, deformation, lab.profile, entry["scene_dir"])
        name = f"{entry['scene']}_{entry['method']}"
        context.log.info(f"{name}: {result.frames} frames at {result.resolution[1]}x{result.resolution[0]} "
                         f"in {result.render_seconds:.1f} s -> {result.orbit_video}")
        if result.grid_png is not None:
            metadata[f"{name}_test_grid"] = dg.MetadataValue.md(image_markdown(
                result.grid_png.read_bytes(), f"{name}: ground truth | prediction | error"))
        metadata[f"{name}_orbit"] = dg.MetadataValue.md(image_markdown(
            result.orbit_strip_png.read_bytes(), f"{name}: orbit frames, t from 0 to 1"))
        metadata[f"{name}_disparity"] = dg.MetadataValue.md(image_markdown(
            result.depth_strip_png.read_bytes(), f"{name}: disparity along the orbit"))
        metadata[f"{name}_video"] = dg.MetadataValue.path(str(result.orbit_video))
    return dg.MaterializeResult(metadata=metadata)


class HiresConfig(NerfTrainConfig):
    resolution: int = 128
    methods: list[str] = ["fast"]  # noqa: RUF012
    iterations: int = 4000


@dg.asset(deps=[bouncing_balls_scene, panda_walk_scene], pool="gpu0", tags={"tier": "full"},
          description="The fast field trained and scored at 128x128 on both scenes (full tier: "
                      "several minutes per scene on CPU, the scenes side by side); rows to nerf_benchmark.")
def nerf_benchmark_hires(context: dg.AssetExecutionContext, config: HiresConfig, gpu0: CardResource,
                         gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    canonical, deformation = gpu0.resolve(), gpu1.resolve()
    jobs = [TrainJob(scene_dir, _train_config(config, lab, scene_dir, method))
            for scene_dir in _scene_dirs(config, lab) for method in config.methods]
    runs = train_and_score(jobs, lab.root() / "nerf", canonical, deformation, log=context.log.info)
    return _benchmark(context, runs, canonical, lab, "hires")


@dg.asset_check(asset=nerf_benchmark, description="Every trained checkpoint beats predicting the mean "
                "training image on the test split: it learnt the scene, not the background.")
def nerf_beats_mean_image(lab: LabResource) -> dg.AssetCheckResult:
    rows = latest_run("nerf_benchmark", lab.duckdb_path())
    if rows.is_empty():
        return dg.AssetCheckResult(passed=False, description="nerf_benchmark has no rows")
    return dg.AssetCheckResult(
        passed=bool((rows["psnr"] > rows["mean_image_psnr"]).all()),
        metadata={"table": dg.MetadataValue.md(markdown_table(
            rows.select("scene", "method", "iterations", "psnr", "ssim", "mean_image_psnr", "white_psnr")))},
    )
