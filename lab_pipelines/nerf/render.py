"""Volume rendering and the two ray pipelines that feed it.

`composite` is the quadrature of Max (1995) used by NeRF: alpha_i = 1 - exp(-sigma_i delta_i),
T_i = prod_{j<i} (1 - alpha_j), C = sum T_i alpha_i c_i + (1 - sum T_i alpha_i) * background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab_pipelines.nerf.fields import DeformableField, DNeRF, FastDNeRF
from lab_pipelines.nerf.sampling import importance_edges, midpoints, sphere_bounds, uniform_edges


@dataclass
class Rendered:
    rgb: torch.Tensor  # (R, 3)
    weights: torch.Tensor  # (R, S)
    opacity: torch.Tensor  # (R,)
    depth: torch.Tensor  # (R,) expected distance along the ray, sum of weights x bin midpoints
    n_evaluated: int  # field evaluations spent on these rays
    coarse_rgb: torch.Tensor | None = None


def composite(sigma: torch.Tensor, rgb: torch.Tensor, edges: torch.Tensor,
              background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour (R, 3), weights (R, S) and opacity (R,) of densities/colours (R, S[, 3]) over bins (R, S+1)."""
    deltas = edges[:, 1:] - edges[:, :-1]
    alpha = 1.0 - torch.exp(-sigma.float() * deltas)
    # Exclusive cumulative product: light reaching bin i; the epsilon keeps log-space stable.
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = transmittance * alpha
    opacity = weights.sum(-1)
    colour = (weights[..., None] * rgb.float()).sum(-2) + (1.0 - opacity[:, None]) * background
    return colour, weights, opacity


def _query(field: DeformableField, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
           edges: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Field at the bin midpoints (R, S) of every ray; bins outside `keep` get zero density."""
    mids = midpoints(edges)
    points = origins[:, None] + dirs[:, None] * mids[..., None]
    shape = mids.shape
    if keep is None:
        keep = torch.ones(shape, dtype=torch.bool, device=mids.device)
    sigma, rgb = field(points[keep], dirs[:, None].expand(*shape, 3)[keep], times[:, None].expand(shape)[keep][:, None])
    sigma_full = torch.zeros(shape, device=mids.device, dtype=torch.float32).masked_scatter(keep, sigma.float())
    rgb_full = torch.zeros(*shape, 3, device=mids.device, dtype=torch.float32).masked_scatter(keep[..., None], rgb.float())
    return sigma_full, rgb_full


def occupied(field: FastDNeRF, points: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Whether each point (..., 3) at time (...) falls in a voxel the occupancy grid keeps."""
    res = field.occupancy.shape[1]
    cell = ((points / field.bound + 1.0) * 0.5 * res).long().clamp(0, res - 1)
    frame_times = field.occupancy_times
    # Nearest frame: bucket by the midpoints between consecutive frame times.
    frame = torch.bucketize(times.contiguous(), 0.5 * (frame_times[1:] + frame_times[:-1]))
    return field.occupancy[frame, cell[..., 0], cell[..., 1], cell[..., 2]]


def _depth(weights: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    return (weights * midpoints(edges)).sum(-1)


def render_fast(field: FastDNeRF, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
                training: bool, generator: torch.Generator | None = None) -> Rendered:
    """Uniform samples inside the bounding sphere, minus those the occupancy grid rules out."""
    near, far = sphere_bounds(origins, dirs, field.bound)
    edges = uniform_edges(near, far, field.cfg.n_samples, jitter=training, generator=generator)
    points = origins[:, None] + dirs[:, None] * midpoints(edges)[..., None]
    keep = occupied(field, points, times[:, None].expand(points.shape[:2]))
    keep &= (edges[:, 1:] > edges[:, :-1])  # rays that miss the sphere have empty bins
    sigma, rgb = _query(field, origins, dirs, times, edges, keep)
    colour, weights, opacity = composite(sigma, rgb, edges)
    return Rendered(colour, weights, opacity, _depth(weights, edges), int(keep.sum()))


def hull_bounds(field: DeformableField, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
                near: torch.Tensor, far: torch.Tensor, probes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each ray's [near, far] shrunk to the span of `probes` evenly spaced points that the
    occupancy grid keeps (widened by half a probe spacing either side), and which rays keep
    any point at all."""
    edges = uniform_edges(near, far, probes, jitter=False)
    points = origins[:, None] + dirs[:, None] * midpoints(edges)[..., None]
    keep = occupied(field, points, times[:, None].expand(points.shape[:2])) & (edges[:, 1:] > edges[:, :-1])
    first = keep.byte().argmax(-1, keepdim=True)
    last = probes - keep.flip(-1).byte().argmax(-1, keepdim=True)
    return edges.gather(1, first)[:, 0], edges.gather(1, last)[:, 0], keep.any(-1)


def _coarse_to_fine(field: DNeRF, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
                    near: torch.Tensor, far: torch.Tensor, training: bool,
                    generator: torch.Generator | None) -> Rendered:
    coarse_edges = uniform_edges(near, far, field.cfg.n_coarse, jitter=training, generator=generator)
    coarse_rgb, coarse_weights, _ = composite(*_query(field, origins, dirs, times, coarse_edges), coarse_edges)
    fine_edges = importance_edges(coarse_edges, coarse_weights, field.cfg.n_fine, jitter=training,
                                  generator=generator)
    colour, weights, opacity = composite(*_query(field, origins, dirs, times, fine_edges), fine_edges)
    n_evaluated = origins.shape[0] * (coarse_edges.shape[1] - 1 + fine_edges.shape[1] - 1)
    return Rendered(colour, weights, opacity, _depth(weights, fine_edges), n_evaluated, coarse_rgb=coarse_rgb)


def render_dnerf(field: DNeRF, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
                 training: bool, generator: torch.Generator | None = None) -> Rendered:
    """The paper's coarse-to-fine scheme: n_coarse stratified samples, then n_fine more drawn
    from the coarse weights; one network answers both passes (as in the D-NeRF code).

    With an occupancy grid the same scheme runs between each ray's hull bounds, so its samples
    land on the object rather than across the whole sphere; rays that miss the hull render as
    background."""
    near, far = sphere_bounds(origins, dirs, field.bound)
    if not field.has_occupancy:
        return _coarse_to_fine(field, origins, dirs, times, near, far, training, generator)
    near, far, hit = hull_bounds(field, origins, dirs, times, near, far, field.cfg.hull_probes)
    rows = hit.nonzero()[:, 0]
    part = _coarse_to_fine(field, origins[rows], dirs[rows], times[rows], near[rows], far[rows], training, generator)

    def every_ray(values: torch.Tensor, missed: float) -> torch.Tensor:
        """`values` of the hit rows, `missed` (background or nothing) in the other rows."""
        return values.new_full((origins.shape[0], *values.shape[1:]), missed).index_put((rows,), values)

    return Rendered(every_ray(part.rgb, 1.0), every_ray(part.weights, 0.0), every_ray(part.opacity, 0.0),
                    every_ray(part.depth, 0.0), part.n_evaluated, coarse_rgb=every_ray(part.coarse_rgb, 1.0))


def render_rays(field: DeformableField, origins: torch.Tensor, dirs: torch.Tensor, times: torch.Tensor,
                training: bool, generator: torch.Generator | None = None) -> Rendered:
    """`generator` draws the stratified jitter when training (None: torch's global one)."""
    if isinstance(field, FastDNeRF):
        return render_fast(field, origins, dirs, times, training, generator)
    return render_dnerf(field, origins, dirs, times, training, generator)
