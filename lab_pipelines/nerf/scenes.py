"""D-NeRF-format scenes: read them, write them, turn cameras into rays.

The official format (Pumarola et al., 2021): a folder with `transforms_{train,val,test}.json`,
each holding `camera_angle_x` (horizontal field of view, radians) and `frames`, each frame a
`file_path` (relative, usually without the `.png`), a `time` in [0, 1] and a 4x4
`transform_matrix`: camera-to-world in the OpenGL convention (camera looks down -z, y up,
x right). Images are RGBA PNGs; we composite them on white, as the paper does.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lab_pipelines.paths import atomic_write_bytes

SPLITS = ("train", "val", "test")
# What a scene writer records about the folder it wrote (not counted by `scene_fingerprint`).
STAMP = "scene.stamp"


class SceneFormatError(ValueError):
    """A D-NeRF-format folder that cannot be read; the message names the file at fault."""


@dataclass
class SceneSplit:
    """One split of a scene, composited on white and resized, ready for ray batching."""

    images: torch.Tensor  # (N, H, W, 3) float32 in [0, 1]
    alphas: torch.Tensor  # (N, H, W) float32 in [0, 1]
    c2w: torch.Tensor  # (N, 4, 4) camera-to-world, OpenGL convention
    times: torch.Tensor  # (N,) in [0, 1]
    focal: float  # in pixels, at this resolution
    names: list[str]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]


def _read_transforms(path: Path) -> dict:
    if not path.is_file():
        raise SceneFormatError(f"{path}: missing (a D-NeRF scene needs transforms_{{train,val,test}}.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SceneFormatError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(meta, dict) or "camera_angle_x" not in meta or "frames" not in meta:
        raise SceneFormatError(f"{path}: needs the keys 'camera_angle_x' and 'frames'")
    if not meta["frames"]:
        raise SceneFormatError(f"{path}: 'frames' is empty")
    return meta


def _frame_image_path(folder: Path, file_path: str) -> Path:
    path = (folder / file_path).resolve()
    return path if path.suffix else path.with_suffix(".png")


def _load_rgba(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """RGBA float in [0, 1]; resized (area filter on premultiplied colour) when `size` is given."""
    try:
        with Image.open(path) as img:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise SceneFormatError(f"{path}: unreadable image ({err})") from None
    if size is not None and (rgba.shape[1], rgba.shape[0]) != size:
        # Premultiply so transparent pixels' colour does not bleed into the edges.
        premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
        channels = [
            np.asarray(Image.fromarray(premult[..., c]).resize(size, Image.BOX)) for c in range(4)
        ]
        premult = np.stack(channels, axis=-1)
        alpha = premult[..., 3:]
        rgba = np.concatenate([premult[..., :3] / np.maximum(alpha, 1e-6), alpha], axis=-1)
    return rgba.clip(0.0, 1.0)


def load_split(folder: str | Path, split: str, downscale: int = 1) -> SceneSplit:
    """Read one split of a D-NeRF-format scene, composited on white, `downscale` times smaller."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneFormatError(f"{folder}: scene folder does not exist")
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    json_path = folder / f"transforms_{split}.json"
    meta = _read_transforms(json_path)
    images, alphas, poses, times, names = [], [], [], [], []
    size = None
    for index, frame in enumerate(meta["frames"]):
        try:
            rel, pose, time = frame["file_path"], frame["transform_matrix"], frame.get("time", 0.0)
            pose = np.asarray(pose, dtype=np.float32)
            if pose.shape != (4, 4):
                raise ValueError(f"transform_matrix has shape {pose.shape}, expected (4, 4)")
            time = float(time)
        except (KeyError, TypeError, ValueError) as err:
            raise SceneFormatError(f"{json_path}: frame {index}: bad or missing field ({err})") from None
        image_path = _frame_image_path(folder, rel)
        if not image_path.is_file():
            raise SceneFormatError(f"{image_path}: missing (frame {index} of {json_path.name})")
        if size is None:
            with Image.open(image_path) as first:
                size = (first.width // downscale, first.height // downscale)
        rgba = _load_rgba(image_path, size)
        images.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
        alphas.append(rgba[..., 3])
        poses.append(pose)
        times.append(time)
        names.append(Path(rel).name)
    width = size[0]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    return SceneSplit(
        images=torch.from_numpy(np.stack(images)).float(),
        alphas=torch.from_numpy(np.stack(alphas)).float(),
        c2w=torch.from_numpy(np.stack(poses)),
        times=torch.tensor(times, dtype=torch.float32),
        focal=float(focal),
        names=names,
    )


def load_scene(folder: str | Path, downscale: int = 1) -> dict[str, SceneSplit]:
    return {split: load_split(folder, split, downscale) for split in SPLITS}


def native_resolution(folder: str | Path) -> int:
    """Width of the first training image as stored, to turn a wanted resolution into a factor."""
    folder = Path(folder)
    meta = _read_transforms(folder / "transforms_train.json")
    path = _frame_image_path(folder, meta["frames"][0]["file_path"])
    if not path.is_file():
        raise SceneFormatError(f"{path}: missing (frame 0 of transforms_train.json)")
    with Image.open(path) as img:
        return img.width


def scene_fingerprint(folder: str | Path) -> str:
    """SHA-256 (first 16 hex digits) over a scene folder's transforms and images, by relative
    path: two benchmark rows compare as equals only when they trained on the same bytes (a
    scene written by an older writer, or edited by hand, differs)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".png"):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def camera_rays(c2w: torch.Tensor, height: int, width: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions (H, W, 3) through pixel centres, OpenGL camera."""
    j, i = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=c2w.device) + 0.5,
        torch.arange(width, dtype=torch.float32, device=c2w.device) + 0.5,
        indexing="ij",
    )
    dirs_cam = torch.stack([(i - 0.5 * width) / focal, -(j - 0.5 * height) / focal, -torch.ones_like(i)], -1)
    dirs = dirs_cam @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs), dirs


def project_points(points: np.ndarray, c2w: np.ndarray, height: int, width: int, focal: float) -> np.ndarray:
    """Pixel coordinates (x right, y down; pixel centres at +0.5) of world points (N, 3)."""
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]  # OpenGL cameras look down -z
    x = focal * cam[:, 0] / depth + 0.5 * width
    y = -focal * cam[:, 1] / depth + 0.5 * height
    return np.stack([x, y], axis=-1)


WORLD_UP = np.array([0.0, 0.0, 1.0])  # z up, as in Blender (the official scenes) and Panda3D


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Camera-to-world (OpenGL convention) of a camera at `eye` looking at `target`."""
    back = eye - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    right = right / np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def orbit_cameras(n: int, radius: float, elevation_deg: float) -> np.ndarray:
    """`n` cameras (n, 4, 4) evenly spaced once around the z axis at one elevation, looking at
    the origin: the path of an orbit video."""
    azimuth = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    elevation = np.deg2rad(elevation_deg)
    eyes = radius * np.stack([np.full(n, np.cos(elevation)) * np.cos(azimuth),
                              np.full(n, np.cos(elevation)) * np.sin(azimuth), np.full(n, np.sin(elevation))], -1)
    return np.stack([look_at(eye, np.zeros(3)) for eye in eyes])


def camera_orbit(c2w: torch.Tensor) -> tuple[float, float]:
    """Mean distance to the origin and mean elevation (degrees) of cameras (N, 4, 4): where an
    orbit through the training viewpoints runs."""
    eyes = c2w[:, :3, 3].double()
    radius = eyes.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((eyes[:, 2] / radius).clamp(-1.0, 1.0)))
    return float(radius.mean()), float(elevation.mean())


def hemisphere_cameras(n: int, radius: float, rng: np.random.Generator,
                       min_elevation_deg: float = 10.0, max_elevation_deg: float = 70.0) -> np.ndarray:
    """`n` camera-to-world matrices on the upper hemisphere looking at the origin, like the
    official D-NeRF renders (a random viewpoint per timestamp)."""
    azimuth = rng.uniform(0.0, 2.0 * np.pi, n)
    elevation = np.deg2rad(rng.uniform(min_elevation_deg, max_elevation_deg, n))
    eyes = radius * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1)
    return np.stack([look_at(eye, np.zeros(3)) for eye in eyes])


def _png_bytes(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(folder: str | Path, split: str, camera_angle_x: float, rgba: np.ndarray,
                c2w: np.ndarray, times: np.ndarray) -> None:
    """Write one split in the official layout: `<split>/r_XXX.png` + `transforms_<split>.json`.

    `rgba` is uint8 (N, H, W, 4). Every file is written atomically; the JSON goes last so a
    reader never sees frames whose images are not there yet.
    """
    folder = Path(folder)
    frames = []
    for index in range(len(rgba)):
        rel = f"./{split}/r_{index:03d}"
        atomic_write_bytes(folder / split / f"r_{index:03d}.png", _png_bytes(rgba[index]))
        frames.append({"file_path": rel, "time": float(times[index]),
                       "transform_matrix": np.asarray(c2w[index], dtype=float).round(8).tolist()})
    payload = {"camera_angle_x": float(camera_angle_x), "frames": frames}
    atomic_write_bytes(folder / f"transforms_{split}.json", json.dumps(payload, indent=1).encode())


def write_scene_once(folder: str | Path, writer: Callable[..., Path], **params: float) -> bool:
    """Write a made scene with `writer(folder, **params)` unless the folder already holds
    exactly what it would write; True when it wrote.

    A stamp records the writer, the hash of its module's source, the parameters and the
    folder's fingerprint, written last. Re-running a demo therefore skips the render and trains
    on the same bytes, and a folder that was edited, half written or made by other code (two
    pixels of the panda once moved a 2,000-step PSNR by 0.07 dB) is written again.
    """
    folder = Path(folder)
    source = Path(inspect.getsourcefile(writer) or "")
    # With the writer's defaults filled in, a caller naming only `size` and one naming every
    # parameter agree on the same scene.
    bound = inspect.signature(writer).bind(folder, **params)
    bound.apply_defaults()
    full = dict(list(bound.arguments.items())[1:])  # all but the folder
    want = {"writer": f"{writer.__module__}.{writer.__qualname__}",
            "source_sha": hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source.is_file() else None,
            "params": full}
    stamp = folder / STAMP
    if stamp.is_file():
        try:
            record = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            record = {}
        if {key: record.get(key) for key in want} == want and record.get("scene_sha") == scene_fingerprint(folder):
            return False
        stamp.unlink()
    writer(folder, **params)
    atomic_write_bytes(stamp, json.dumps({**want, "scene_sha": scene_fingerprint(folder)}).encode())
    return True
