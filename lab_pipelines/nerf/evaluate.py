"""Test-split evaluation of a trained checkpoint: PSNR/SSIM at the training resolution,
every test view saved as a PNG (ground truth | prediction) and a GIF sweeping time at a
fixed camera."""

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
    time_sweep_gif: Path
    render_seconds: float


@torch.no_grad()
def render_image(model: DeformableField, c2w: torch.Tensor, t: float, height: int, width: int, focal: float,
                 train_config: dict, device: str, chunk: int = 8192) -> torch.Tensor:
    """(H, W, 3) image of the field at time t seen from camera-to-world `c2w`."""
    origins, dirs = camera_rays(c2w.to(device), height, width, focal)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    times = torch.full((origins.shape[0],), float(t), device=device)
    amp = autocast_dtype(device)
    parts = []
    for start in range(0, origins.shape[0], chunk):
        s = slice(start, start + chunk)
        with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
            out = render_rays(model, origins[s], dirs[s], times[s], False, train_config["scene_radius"])
        parts.append(out.rgb.float().clamp(0, 1))
    return torch.cat(parts).reshape(height, width, 3).cpu()


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.numpy() * 255 + 0.5).astype(np.uint8)


def evaluate(checkpoint: str | Path, out_dir: str | Path, scene_dir: str | Path | None = None,
             canonical_device: str = "cpu", deformation_device: str | None = None,
             gif_frames: int = 24, split_name: str = "test") -> EvalResult:
    """Render the split at the checkpoint's training resolution and score it."""
    model, state = load_checkpoint(checkpoint, canonical_device, deformation_device)
    train_config = state["train_config"]
    scene_dir = Path(scene_dir or state["scene_dir"])
    split = load_split(scene_dir, split_name, train_config["downscale"])
    height, width = split.height, split.width
    out_dir = Path(out_dir)
    start = time.perf_counter()
    preds = torch.stack([
        render_image(model, split.c2w[i], float(split.times[i]), height, width, split.focal, train_config,
                     canonical_device)
        for i in range(len(split.times))
    ])
    seconds = time.perf_counter() - start
    views = []
    for i, name in enumerate(split.names):
        path = out_dir / f"{split_name}_{name}.png"
        atomic_write_bytes(path, _png(_to_uint8(torch.cat([split.images[i], preds[i]], dim=1))))
        views.append(path)
    # A montage of the first views: ground truth on top, prediction below.
    k = min(6, len(split.names))
    montage = torch.cat([torch.cat(list(split.images[:k]), 1), torch.cat(list(preds[:k]), 1)], 0)
    montage_path = out_dir / "montage.png"
    atomic_write_bytes(montage_path, _png(_to_uint8(montage)))
    # Time sweep from the first test camera: motion without camera motion, where ghosting shows.
    frames = [Image.fromarray(_to_uint8(render_image(model, split.c2w[0], t, height, width, split.focal,
                                                     train_config, canonical_device)))
              for t in np.linspace(0.0, 1.0, gif_frames)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    gif_path = out_dir / "time_sweep.gif"
    atomic_write_bytes(gif_path, buffer.getvalue())
    return EvalResult(
        psnr=mean_view_psnr(preds, split.images), ssim=float(ssim(preds, split.images)), n_views=len(split.names),
        resolution=(height, width), views_png=views, montage_png=montage_path, time_sweep_gif=gif_path,
        render_seconds=seconds,
    )
