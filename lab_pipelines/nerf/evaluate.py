"""Test-split evaluation of a trained checkpoint: PSNR/SSIM at the training resolution, and
every test view saved as a PNG (ground truth | prediction) with a montage of the first ones.

`render_views` is the one batched renderer behind evaluation, the render asset and
`lab render`: the rays of all the views go through the field in fixed-size chunks, with no
Python loop over rays or pixels."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lab_pipelines.devices import autocast_dtype
from lab_pipelines.nerf.fields import DeformableField
from lab_pipelines.nerf.metrics import mean_view_psnr, ssim
from lab_pipelines.nerf.render import render_rays
from lab_pipelines.nerf.scenes import camera_rays, load_split
from lab_pipelines.nerf.train import load_checkpoint
from lab_pipelines.paths import atomic_write_bytes


@dataclass
class EvalResult:
    psnr: float
    ssim: float
    n_views: int
    resolution: tuple[int, int]
    views_png: list[Path]
    montage_png: Path
    render_seconds: float


@dataclass
class Views:
    rgb: torch.Tensor  # (N, H, W, 3) in [0, 1]
    depth: torch.Tensor  # (N, H, W) expected ray distance, 0 where nothing was hit
    opacity: torch.Tensor  # (N, H, W)


@torch.no_grad()
def render_views(model: DeformableField, c2w: torch.Tensor, times: torch.Tensor, height: int, width: int,
                 focal: float, device: str, chunk: int = 8192) -> Views:
    """Colour, depth and opacity of the field seen from cameras `c2w` (N, 4, 4) at `times` (N,)."""
    rays = [camera_rays(m.to(device), height, width, focal) for m in c2w]
    origins = torch.stack([o for o, _ in rays]).reshape(-1, 3)
    dirs = torch.stack([d for _, d in rays]).reshape(-1, 3)
    ray_times = times.to(device).float().repeat_interleave(height * width)
    amp = autocast_dtype(device)
    rgb, depth, opacity = [], [], []
    for start in range(0, origins.shape[0], chunk):
        s = slice(start, start + chunk)
        with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
            out = render_rays(model, origins[s], dirs[s], ray_times[s], False)
        rgb.append(out.rgb.float().clamp(0, 1))
        depth.append(out.depth.float())
        opacity.append(out.opacity.float())
    n = c2w.shape[0]
    return Views(torch.cat(rgb).reshape(n, height, width, 3).cpu(), torch.cat(depth).reshape(n, height, width).cpu(),
                 torch.cat(opacity).reshape(n, height, width).cpu())


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def evaluate(checkpoint: str | Path, out_dir: str | Path, scene_dir: str | Path | None = None,
             canonical_device: str = "cpu", deformation_device: str | None = None,
             split_name: str = "test") -> EvalResult:
    """Render the split at the checkpoint's training resolution and score it."""
    model, state = load_checkpoint(checkpoint, canonical_device, deformation_device)
    train_config = state["train_config"]
    scene_dir = Path(scene_dir or state["scene_dir"])
    split = load_split(scene_dir, split_name, train_config["downscale"])
    height, width = split.height, split.width
    out_dir = Path(out_dir)
    start = time.perf_counter()
    preds = render_views(model, split.c2w, split.times, height, width, split.focal, canonical_device).rgb
    seconds = time.perf_counter() - start
    views = []
    for i, name in enumerate(split.names):
        path = out_dir / f"{split_name}_{name}.png"
        atomic_write_bytes(path, png_bytes(to_uint8(torch.cat([split.images[i], preds[i]], dim=1))))
        views.append(path)
    # A montage of the first views: ground truth on top, prediction below.
    k = min(6, len(split.names))
    montage = torch.cat([torch.cat(list(split.images[:k]), 1), torch.cat(list(preds[:k]), 1)], 0)
    montage_path = out_dir / "montage.png"
    atomic_write_bytes(montage_path, png_bytes(to_uint8(montage)))
    return EvalResult(
        psnr=mean_view_psnr(preds, split.images), ssim=float(ssim(preds, split.images)), n_views=len(split.names),
        resolution=(height, width), views_png=views, montage_png=montage_path, render_seconds=seconds,
    )
