"""Train and score: every (scene, method) trained for its steps, evaluated on the test split,
as `nerf_benchmark` rows; the manifest that hands checkpoints from training to evaluation and
rendering."""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lab_pipelines.machine import usable_cores
from lab_pipelines.nerf.evaluate import EvalResult, evaluate
from lab_pipelines.nerf.metrics import mean_view_psnr, ssim
from lab_pipelines.nerf.scenes import load_split, native_resolution
from lab_pipelines.nerf.train import TrainConfig, TrainResult, result_from_checkpoint, train
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.progress import LogFn

BENCHMARK_COLUMNS = ("scene", "method", "resolution", "iterations", "train_seconds", "rays_per_second", "psnr",
                     "ssim", "split")


@dataclass
class MethodRun:
    scene_dir: Path
    trained: TrainResult
    evaluated: EvalResult

    def row(self, device: str) -> dict:
        """The `nerf_benchmark` row, with the trivial baselines of the same test views."""
        h, w = self.evaluated.resolution
        return {
            "scene": self.scene_dir.name, "method": self.trained.method, "resolution": f"{w}x{h}",
            "iterations": self.trained.steps, "train_seconds": round(self.trained.train_seconds, 1),
            "rays_per_second": round(self.trained.rays_per_second, 1),
            "psnr": self.evaluated.psnr, "ssim": self.evaluated.ssim, "split": "test",
            "focus": self.trained.config["focus"], "seed": self.trained.config["seed"], "device": device,
            "scene_sha": self.trained.scene_sha,
            **trivial_baselines(self.scene_dir, self.trained.config["downscale"]),
        }


def downscale_for(scene_dir: str | Path, resolution: int) -> int:
    """The integer factor that brings the stored width down to `resolution` (0: as stored)."""
    native = native_resolution(scene_dir)
    if resolution <= 0:
        return 1
    if native % resolution:
        raise ValueError(f"{scene_dir}: stored width {native} is not a multiple of resolution {resolution}")
    return native // resolution


def trivial_baselines(scene_dir: str | Path, downscale: int) -> dict[str, float]:
    """Test PSNR of predicting all white, and PSNR and SSIM of predicting the mean training
    image: any model worth its training time must beat both."""
    test, train_split = load_split(scene_dir, "test", downscale), load_split(scene_dir, "train", downscale)
    white = torch.ones_like(test.images)
    mean = train_split.images.mean(0, keepdim=True).expand_as(test.images)
    return {"white_psnr": mean_view_psnr(white, test.images), "mean_image_psnr": mean_view_psnr(mean, test.images),
            "mean_image_ssim": float(ssim(mean, test.images))}


def score_checkpoint(checkpoint: Path, out_dir: Path, scene_dir: Path | None = None, canonical_device: str = "cpu",
                     deformation_device: str | None = None) -> MethodRun:
    """A trained checkpoint's bookkeeping and its test-split scores (on `scene_dir`, default
    the scene it was trained on)."""
    trained = result_from_checkpoint(checkpoint)
    scene_dir = Path(scene_dir or trained.scene_dir)
    evaluated = evaluate(checkpoint, out_dir, scene_dir, canonical_device, deformation_device)
    return MethodRun(scene_dir, trained, evaluated)


def _renders_dir(out_dir: Path, scene_dir: Path, method: str) -> Path:
    return out_dir / "renders" / f"{scene_dir.name}-{method}"


def run_method(scene_dir: Path, out_dir: Path, cfg: TrainConfig, canonical_device: str, deformation_device: str,
               on_log: Callable[[dict], None] | None = None, log: LogFn | None = None) -> MethodRun:
    trained = train(scene_dir, out_dir / "checkpoints", cfg, canonical_device, deformation_device, on_log, log)
    return score_checkpoint(trained.checkpoint, _renders_dir(out_dir, scene_dir, cfg.method), scene_dir,
                            canonical_device, deformation_device)


def side_by_side(scene_dir: str | Path, out_dir: str | Path, methods: list[str], base: TrainConfig,
                 canonical_device: str = "cpu", deformation_device: str | None = None,
                 on_log: Callable[[dict], None] | None = None,
                 iterations: Callable[[str], int] | None = None) -> list[MethodRun]:
    """Every method in `methods` trained from scratch at `base`'s settings and resolution, for
    `iterations(method)` steps (default: `base.iterations`)."""
    return [
        run_method(Path(scene_dir), Path(out_dir),
                   replace(base, method=m, iterations=iterations(m) if iterations else base.iterations),
                   canonical_device, deformation_device or canonical_device, on_log)
        for m in methods
    ]


@dataclass(frozen=True)
class TrainJob:
    scene_dir: Path
    cfg: TrainConfig


def parallel_trainings(device: str, jobs: int, threads: int) -> int:
    """How many trainings run at once: on the CPU as many as its cores hold at `threads` each,
    on a card one. A CPU training is bit-repeatable under load (one thread, its own
    generators), so running trainings side by side changes their seconds, not their fields."""
    if device != "cpu":
        return 1
    return max(1, min(jobs, usable_cores() // max(threads, 1)))


def trainings_at_once(jobs: list[TrainJob], device: str) -> int:
    """`parallel_trainings` for these jobs, at the most intra-op threads any of them takes."""
    return parallel_trainings(device, len(jobs), max((job.cfg.cpu_threads for job in jobs), default=1))


def _train_in_child(job: TrainJob, out_dir: Path, canonical_device: str, deformation_device: str) -> TrainResult:
    prefix = f"[{job.scene_dir.name} {job.cfg.method}]"
    return train(job.scene_dir, out_dir, job.cfg, canonical_device, deformation_device,
                 log=lambda line: print(prefix, line, file=sys.stderr, flush=True))


def train_all(jobs: list[TrainJob], out_dir: Path, canonical_device: str, deformation_device: str,
              log: LogFn | None = None) -> list[TrainResult]:
    """Every job trained (or resumed), in `jobs` order. On the CPU the jobs share the cores,
    one single-threaded training per core in its own process, whose progress lines go to
    stderr with the scene and method in front; `log` gets one line per finished job."""
    workers = trainings_at_once(jobs, canonical_device)
    if workers == 1:
        return [train(job.scene_dir, out_dir, job.cfg, canonical_device, deformation_device, log=log) for job in jobs]
    # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-use.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_in_child, job, out_dir, canonical_device, deformation_device) for job in jobs]
        results = []
        for job, future in zip(jobs, futures):
            result = future.result()
            if log:
                log(f"{job.scene_dir.name} {job.cfg.method}: {result.steps} steps in {result.train_seconds:.0f} s "
                    f"({workers} trainings at once)")
            results.append(result)
    return results


def train_and_score(jobs: list[TrainJob], out_dir: Path, canonical_device: str, deformation_device: str,
                    log: LogFn | None = None) -> list[MethodRun]:
    """`train_all` the jobs into `out_dir`/checkpoints, then score each on its test split."""
    trained = train_all(jobs, out_dir / "checkpoints", canonical_device, deformation_device, log)
    return [score_checkpoint(result.checkpoint, _renders_dir(out_dir, job.scene_dir, job.cfg.method), job.scene_dir,
                             canonical_device, deformation_device)
            for job, result in zip(jobs, trained)]


def write_manifest(path: Path, entries: list[dict]) -> None:
    """The checkpoints a training run produced: one {scene, method, checkpoint, scene_dir}
    each, read by evaluation and rendering."""
    atomic_write_bytes(path, json.dumps({"checkpoints": entries}, indent=1).encode())


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: materialize dnerf_checkpoint first")
    return json.loads(path.read_text())["checkpoints"]
