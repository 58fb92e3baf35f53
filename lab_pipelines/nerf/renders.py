"""What a trained field looks like: test views beside the ground truth and their error, an
orbit video (the camera circles the object while t runs from 0 to 1) and the disparity of the
same path. One set of functions behind the `dnerf_render` asset and `lab render`.

Videos are MP4 (H.264) through imageio's ffmpeg plugin, whose binary ships in the
imageio-ffmpeg wheel; without it they fall back to GIF through Pillow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

from lab_pipelines.nerf.evaluate import Views, png_bytes, render_views, to_uint8
from lab_pipelines.nerf.fields import DeformableField
from lab_pipelines.nerf.scenes import load_split, orbit_cameras
from lab_pipelines.nerf.train import load_checkpoint
from lab_pipelines.paths import atomic_write_bytes

FPS = 12
ERROR_SCALE = 0.25  # an absolute error this large (per channel, mean over RGB) is full scale
GRID_CELL = 128  # grid cells are upscaled (nearest) to at least this many pixels across


@dataclass
class RenderResult:
    folder: Path
    grid_png: Path | None  # None when the scene's test split was not on disk
    orbit_video: Path
    depth_video: Path
    orbit_strip_png: Path
    depth_strip_png: Path
    frames: int
    resolution: tuple[int, int]
    render_seconds: float


def ffmpeg_available() -> bool:
    """Whether imageio can find an ffmpeg binary (the imageio-ffmpeg wheel ships one)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def write_video(frames: np.ndarray, path: Path, fps: int = FPS) -> Path:
    """Frames (F, H, W, 3) uint8 as an MP4 at `path`, or as a GIF beside it (same stem) when
    `path` asks for .gif or ffmpeg is missing; returns the file written. Atomic: a temporary
    file in the same folder, renamed."""
    path = Path(path)
    if path.suffix.lower() != ".mp4" or not ffmpeg_available():
        gif = path.with_suffix(".gif")
        atomic_write_bytes(gif, iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0))
        return gif
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.mp4")
    # yuv420p (what every player reads) needs even sizes, which `even` guarantees upstream;
    # macro_block_size 2 stops imageio rescaling to multiples of 16.
    iio.imwrite(tmp, frames, plugin="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                macro_block_size=2, ffmpeg_log_level="error")
    os.replace(tmp, path)
    return path


def even(n: int) -> int:
    return n + n % 2


def _colourise(values: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] (..., ) to RGB floats (..., 3) through a matplotlib colour map."""
    return matplotlib.colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3]


def disparity_frames(views: Views, near: float, far: float) -> np.ndarray:
    """Disparity (inverse depth) of each view in [1/far, 1/near], colour-mapped (near: bright),
    faded to white where the ray hit nothing (opacity)."""
    opacity = views.opacity.numpy()
    depth = views.depth.numpy() / np.maximum(opacity, 1e-6)  # depth given a hit
    disparity = (1.0 / np.clip(depth, near, far) - 1.0 / far) / (1.0 / near - 1.0 / far)
    colour = _colourise(disparity, "magma")
    colour = colour * opacity[..., None] + (1.0 - opacity[..., None])
    return (colour * 255 + 0.5).astype(np.uint8)


def error_map(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Mean absolute error over RGB (H, W), colour-mapped with full scale at ERROR_SCALE."""
    error = (pred - truth).abs().mean(-1).numpy() / ERROR_SCALE
    return (_colourise(error, "inferno") * 255 + 0.5).astype(np.uint8)


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image


def _labelled_grid(rows: list[list[np.ndarray]], labels: list[str]) -> np.ndarray:
    """Cells (all the same size) in rows, with a white header naming each column."""
    cell_w = rows[0][0].shape[1]
    factor = max(1, -(-GRID_CELL // cell_w))
    body = np.concatenate([np.concatenate([_upscale(c, factor) for c in row], 1) for row in rows], 0)
    header = Image.new("RGB", (body.shape[1], 14), "white")
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(labels):
        draw.text((i * cell_w * factor + 4, 1), label, fill="black")
    return np.concatenate([np.asarray(header), body], 0)


def view_grid(model: DeformableField, state: dict, scene_dir: Path, n_views: int, device: str) -> np.ndarray:
    """The first `n_views` test views, one per row: ground truth | prediction | error map."""
    train_config = state["train_config"]
    split = load_split(scene_dir, "test", train_config["downscale"])
    k = min(n_views, len(split.names))
    pred = render_views(model, split.c2w[:k], split.times[:k], split.height, split.width, split.focal,
                        device).rgb
    rows = [[to_uint8(split.images[i]), to_uint8(pred[i]), error_map(pred[i], split.images[i])] for i in range(k)]
    return _labelled_grid(rows, ["ground truth", "prediction", f"|error|, 0-{ERROR_SCALE}"])


def render_orbit(model: DeformableField, state: dict, frames: int, resolution: int, device: str) -> Views:
    """The orbit path through the training cameras' distance and elevation, t from 0 to 1,
    at `resolution` pixels across (0: the training resolution), made even for the video."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    height, width = state["resolution"]
    size = even(resolution or width)
    focal = state["focal"] * size / width  # the same field of view at any size
    c2w = torch.from_numpy(orbit_cameras(frames, state["orbit"]["radius"], state["orbit"]["elevation_deg"])).float()
    times = torch.linspace(0.0, 1.0, frames)
    return render_views(model, c2w, times, even(round(height * size / width)), size, focal, device)


def orbit_videos(model: DeformableField, state: dict, video: Path, frames: int, resolution: int,
                 device: str) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """The orbit as a colour video at `video` and its disparity beside it (`<stem>_depth`);
    returns both paths and both frame stacks (F, H, W, 3) uint8."""
    views = render_orbit(model, state, frames, resolution, device)
    radius, bound = state["orbit"]["radius"], state["train_config"]["scene_radius"]
    rgb = np.stack([to_uint8(v) for v in views.rgb])
    depth = disparity_frames(views, max(radius - bound, 1e-3), radius + bound)
    video = Path(video)
    written = write_video(rgb, video)
    depth_written = write_video(depth, video.with_name(f"{video.stem}_depth{video.suffix}"))
    return written, depth_written, rgb, depth


def strip(frames: np.ndarray, count: int = 6) -> np.ndarray:
    """`count` frames spread over the sequence, side by side, upscaled like the grid's cells."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    factor = max(1, -(-GRID_CELL // frames.shape[2]))
    return _upscale(np.concatenate(list(frames[picks]), 1), factor)


def render_checkpoint(checkpoint: str | Path, out_dir: str | Path, frames: int = 24, resolution: int = 0,
                      n_views: int = 4, canonical_device: str = "cpu", deformation_device: str | None = None,
                      profile: str | None = None, scene_dir: str | Path | None = None,
                      video_suffix: str = ".mp4") -> RenderResult:
    """Everything a researcher looks at for one checkpoint, written under `out_dir`:
    test_grid.png (when the scene's test split is on disk), orbit and orbit_depth videos, and
    strips of a few of their frames (for reports)."""
    model, state = load_checkpoint(checkpoint, canonical_device, deformation_device, profile)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    scene_dir = Path(scene_dir or state["scene_dir"])
    grid_png = None
    if (scene_dir / "transforms_test.json").is_file():
        grid_png = out_dir / "test_grid.png"
        atomic_write_bytes(grid_png, png_bytes(view_grid(model, state, scene_dir, n_views, canonical_device)))
    orbit, depth_video, rgb, depth = orbit_videos(model, state, out_dir / f"orbit{video_suffix}", frames,
                                                  resolution, canonical_device)
    orbit_strip, depth_strip = out_dir / "orbit_strip.png", out_dir / "depth_strip.png"
    atomic_write_bytes(orbit_strip, png_bytes(strip(rgb)))
    atomic_write_bytes(depth_strip, png_bytes(strip(depth)))
    return RenderResult(out_dir, grid_png, orbit, depth_video, orbit_strip, depth_strip, frames,
                        tuple(rgb.shape[1:3]), time.perf_counter() - start)
