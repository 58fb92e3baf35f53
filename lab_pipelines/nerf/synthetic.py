"""`bouncing_balls`: an analytic dynamic scene written in the D-NeRF format.

A few shaded spheres bounce (|sin| height) while drifting on circles; every pixel is an exact
ray-sphere intersection, supersampled for anti-aliased edges and alpha. One camera per
timestamp on the upper hemisphere, as in the official D-NeRF renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lab_pipelines.nerf.scenes import camera_rays, hemisphere_cameras, write_split


@dataclass(frozen=True)
class Ball:
    colour: tuple[float, float, float]
    radius: float
    orbit_radius: float
    orbit_phase: float
    orbit_turns: float  # full turns over t in [0, 1]
    bounce_height: float
    bounces: float  # bounces over t in [0, 1]


BALLS = (
    Ball((0.90, 0.20, 0.15), 0.30, 0.55, 0.0, 0.5, 0.7, 2.0),
    Ball((0.15, 0.55, 0.90), 0.25, 0.60, 2.1, -0.5, 0.9, 3.0),
    Ball((0.20, 0.75, 0.25), 0.22, 0.35, 4.2, 1.0, 0.5, 1.5),
)
LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])


def ball_centres(t: float, balls: tuple[Ball, ...] = BALLS) -> np.ndarray:
    """(n_balls, 3) centres at time t; the lowest point of each bounce touches z = -0.6."""
    centres = []
    for b in balls:
        angle = b.orbit_phase + 2.0 * np.pi * b.orbit_turns * t
        height = -0.6 + b.radius + b.bounce_height * abs(np.sin(np.pi * b.bounces * t))
        centres.append([b.orbit_radius * np.cos(angle), b.orbit_radius * np.sin(angle), height])
    return np.asarray(centres)


def render_balls(c2w: np.ndarray, t: float, size: int, focal: float, supersample: int = 3) -> np.ndarray:
    """RGBA uint8 (size, size, 4): Lambertian + ambient spheres, transparent background."""
    hi = size * supersample
    origins, dirs = camera_rays(torch.from_numpy(c2w).float(), hi, hi, focal * supersample)
    origins, dirs = origins.numpy().reshape(-1, 3).astype(np.float64), dirs.numpy().reshape(-1, 3).astype(np.float64)
    nearest = np.full(len(dirs), np.inf)
    rgb = np.zeros((len(dirs), 3))
    for ball, centre in zip(BALLS, ball_centres(t)):
        oc = origins - centre
        b = np.einsum("ij,ij->i", oc, dirs)
        disc = b * b - (np.einsum("ij,ij->i", oc, oc) - ball.radius**2)
        hit = disc > 0
        depth = np.where(hit, -b - np.sqrt(np.where(hit, disc, 0.0)), np.inf)
        closer = hit & (depth > 0) & (depth < nearest)
        normal = (origins[closer] + depth[closer, None] * dirs[closer] - centre) / ball.radius
        shade = 0.3 + 0.7 * np.clip(normal @ LIGHT, 0.0, None)
        rgb[closer] = shade[:, None] * np.asarray(ball.colour)
        nearest[closer] = depth[closer]
    alpha = np.isfinite(nearest).astype(np.float64)
    rgba = np.concatenate([rgb, alpha[:, None]], -1).reshape(size, supersample, size, supersample, 4)
    # Average premultiplied colour over each pixel's sub-samples, then un-premultiply for PNG.
    alpha = rgba[..., 3].mean(axis=(1, 3))
    colour = rgba[..., :3].mean(axis=(1, 3)) / np.maximum(alpha, 1e-6)[..., None]
    out = np.concatenate([colour, alpha[..., None]], -1)
    return (out.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def write_bouncing_balls(folder: str | Path, size: int = 128, n_train: int = 100, n_val: int = 10,
                         n_test: int = 20, camera_angle_x: float = 0.6911, radius: float = 4.0,
                         seed: int = 0) -> Path:
    """Render the scene into `folder` in the D-NeRF format; returns the folder.

    Train times are evenly spaced over [0, 1] like the official scenes; val and test draw their
    own times and cameras, so evaluation sees unseen (view, time) pairs.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    focal = 0.5 * size / np.tan(0.5 * camera_angle_x)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        times = np.linspace(0.0, 1.0, n) if split == "train" else np.sort(rng.uniform(0.0, 1.0, n))
        c2w = hemisphere_cameras(n, radius, rng)
        rgba = np.stack([render_balls(c2w[k], float(times[k]), size, focal) for k in range(n)])
        write_split(folder, split, camera_angle_x, rgba, c2w, times)
    return folder
