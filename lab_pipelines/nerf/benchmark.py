"""Side-by-side benchmark: train each method on one scene at the same wall-clock budget,
evaluate on the test split, and return `nerf_benchmark` rows (plus the artifacts' paths)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lab_pipelines.nerf.evaluate import EvalResult, evaluate
from lab_pipelines.nerf.metrics import mean_view_psnr
from lab_pipelines.nerf.scenes import load_split, native_resolution
from lab_pipelines.nerf.train import TrainConfig, TrainResult, train
from lab_pipelines.progress import LogFn

BENCHMARK_COLUMNS = ("scene", "method", "resolution", "iterations", "train_seconds", "psnr", "ssim")


@dataclass
class MethodRun:
    trained: TrainResult
    evaluated: EvalResult

    def row(self, scene: str, device: str) -> dict:
        h, w = self.evaluated.resolution
        return {
            "scene": scene, "method": self.trained.method, "resolution": f"{w}x{h}",
            "iterations": self.trained.steps, "train_seconds": round(self.trained.train_seconds, 1),
            "psnr": self.evaluated.psnr, "ssim": self.evaluated.ssim,
            "rays_per_second": round(self.trained.rays_per_second, 1), "device": device,
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
    """Test PSNR of predicting all white, and of predicting the mean training image: any
    model worth its training time must beat both."""
    test, train_split = load_split(scene_dir, "test", downscale), load_split(scene_dir, "train", downscale)
    white = torch.ones_like(test.images)
    mean = train_split.images.mean(0, keepdim=True).expand_as(test.images)
    return {"white_psnr": mean_view_psnr(white, test.images), "mean_image_psnr": mean_view_psnr(mean, test.images)}


def run_method(scene_dir: Path, out_dir: Path, cfg: TrainConfig, canonical_device: str, deformation_device: str,
               on_log: Callable[[dict], None] | None = None, log: LogFn | None = None) -> MethodRun:
    trained = train(scene_dir, out_dir / "checkpoints", cfg, canonical_device, deformation_device, on_log, log)
    evaluated = evaluate(trained.checkpoint, out_dir / "renders" / f"{scene_dir.name}-{cfg.method}",
                         scene_dir, canonical_device, deformation_device)
    return MethodRun(trained, evaluated)


def side_by_side(scene_dir: str | Path, out_dir: str | Path, methods: list[str], base: TrainConfig,
                 canonical_device: str = "cpu", deformation_device: str | None = None,
                 on_log: Callable[[dict], None] | None = None) -> list[MethodRun]:
    """Every method in `methods` trained from scratch at `base`'s budget and resolution."""
    return [
        run_method(Path(scene_dir), Path(out_dir), replace(base, method=m), canonical_device,
                   deformation_device or canonical_device, on_log)
        for m in methods
    ]
