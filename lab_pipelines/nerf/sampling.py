"""Where to look: which pixels to train on, and where along each ray to evaluate the field.

Samples along a ray are stored as bin *edges* (R, S+1); the field is evaluated at bin
midpoints and each bin's width is its delta in the rendering integral. Rays are clipped to
the scene's bounding sphere, so no sample is spent on empty space outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sphere_bounds(origins: torch.Tensor, dirs: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Near/far distances (R,) of unit-direction rays through a sphere at the origin.

    Rays that miss get near == far, i.e. an empty interval that renders as background.
    """
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - radius**2)
    half = torch.sqrt(disc.clamp(min=0.0))
    near = (-b - half).clamp(min=0.0)
    far = torch.where(disc > 0, -b + half, near)
    return near, far.clamp(min=near)


def uniform_edges(near: torch.Tensor, far: torch.Tensor, n: int, jitter: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """n equal bins between near and far (R, n+1); `jitter` shifts each ray's bins by a random
    fraction of a bin (stratified sampling) so training sees the whole interval. `generator`
    (on near's device) makes the jitter reproducible whatever else draws random numbers."""
    steps = torch.linspace(0.0, 1.0, n + 1, device=near.device)
    if jitter:
        offset = (torch.rand(near.shape[0], 1, device=near.device, generator=generator) - 0.5) / n
        steps = (steps + offset).clamp(0.0, 1.0)
    return near[:, None] + (far - near)[:, None] * steps


def importance_edges(edges: torch.Tensor, weights: torch.Tensor, n: int, jitter: bool,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Hierarchical sampling: draw n points from the piecewise-constant PDF that `weights`
    (R, S) define over `edges` (R, S+1) and merge them with the coarse edges (R, S+1+n)."""
    pdf = (weights.detach() + 1e-5) / (weights.detach() + 1e-5).sum(-1, keepdim=True)
    cdf = F.pad(torch.cumsum(pdf, -1), (1, 0))
    cdf[:, -1] = 1.0
    if jitter:
        u = torch.rand(edges.shape[0], n, device=edges.device, generator=generator)
    else:
        u = torch.linspace(0.0, 1.0, n + 2, device=edges.device)[1:-1].expand(edges.shape[0], n)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, edges.shape[1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    edge_lo, edge_hi = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = (u - cdf_lo) / (cdf_hi - cdf_lo).clamp(min=1e-8)
    fine = edge_lo + frac * (edge_hi - edge_lo)
    return torch.sort(torch.cat([edges, fine], -1), -1).values


def midpoints(edges: torch.Tensor) -> torch.Tensor:
    return 0.5 * (edges[:, 1:] + edges[:, :-1])


def pixel_importance(images: torch.Tensor, alphas: torch.Tensor | None = None, background: float = 1.0,
                     floor: float = 0.01, dilate: int = 2) -> torch.Tensor:
    """Spatio-temporal importance of every training pixel (N, H, W).

    DyNeRF's ISG weighs a pixel by how far it strays from its temporal median. In a D-NeRF
    scene only the background is the same at every time (each frame has its own camera), so
    that median is the background: the weight is the distance to it (or the pixel's alpha,
    which also catches white objects on the white background), spread a few pixels outwards
    so silhouettes, where ghosting shows, are covered, with a floor so no pixel has zero chance.
    """
    distance = (images - background).abs().amax(-1)
    if alphas is not None:
        distance = torch.maximum(distance, alphas)
    spread = F.max_pool2d(distance[:, None], 2 * dilate + 1, stride=1, padding=dilate)[:, 0]
    return spread.clamp(min=floor)


class PixelSampler:
    """Draws training pixels: a `focus` share from the importance distribution, the rest
    uniformly, so background pixels keep the empty space empty."""

    def __init__(self, importance: torch.Tensor, focus: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.shape = importance.shape  # (N, H, W)
        self.focus = focus
        self.cdf = torch.cumsum(importance.flatten().double(), 0)
        self.cdf /= self.cdf[-1].clone()
        self.generator = generator

    def sample(self, batch: int) -> torch.Tensor:
        """Flat pixel indices (batch,) into (N, H, W)."""
        n_focus = int(batch * self.focus)
        total = self.cdf.numel()
        uniform = torch.randint(0, total, (batch - n_focus,), generator=self.generator)
        u = torch.rand(n_focus, generator=self.generator, dtype=torch.float64)
        focused = torch.searchsorted(self.cdf, u).clamp(max=total - 1)
        return torch.cat([uniform, focused])


def carve_occupancy(c2w: torch.Tensor, alphas: torch.Tensor, times: torch.Tensor, focal: float, bound: float,
                    res: int, dilate: int = 3, window: int = 1) -> torch.Tensor:
    """Per-frame visual hull on a res^3 grid over [-bound, bound]^3: (N, res, res, res) bool.

    Whatever occupies space at a frame's time projects onto that frame's non-background
    pixels, so a voxel whose centre lands on background is empty then. One view only carves
    a cone, so each frame's hull is intersected with those of its `window` neighbours in time
    on either side (other viewpoints, nearly the same instant); silhouettes grow by `dilate`
    pixels first, which covers the voxel's own size and the motion between neighbours.
    Voxels outside a view are not carved by it: nothing is known about them there.
    """
    n, height, width = alphas.shape
    axis = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2.0 - 1.0
    centres = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).view(-1, 3) * bound
    silhouettes = F.max_pool2d((alphas > 0.01).float()[:, None], 2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0
    w2c = torch.linalg.inv(c2w.double()).float()
    cam = torch.einsum("nij,vj->nvi", w2c[:, :3, :3], centres) + w2c[:, None, :3, 3]
    depth = -cam[..., 2]  # OpenGL cameras look down -z
    px = (focal * cam[..., 0] / depth + 0.5 * width).floor().long()
    py = (-focal * cam[..., 1] / depth + 0.5 * height).floor().long()
    inside = (depth > 0) & (px >= 0) & (px < width) & (py >= 0) & (py < height)
    frame = torch.arange(n)[:, None].expand_as(px)
    single = silhouettes[frame, py.clamp(0, height - 1), px.clamp(0, width - 1)] | ~inside
    order = torch.argsort(times)
    hull = torch.empty_like(single)
    for rank, k in enumerate(order.tolist()):
        neighbours = order[max(0, rank - window):rank + window + 1]
        hull[k] = single[neighbours].all(0)
    return hull.view(n, res, res, res)
