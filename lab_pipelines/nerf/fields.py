"""Deformable radiance fields: a deformation Psi(x, t) -> dx into a canonical frame, then a
canonical field (x + dx, d) -> (density, colour). Both models keep the D-NeRF contract:
Psi(x, 0) = 0, so the scene at t = 0 *is* the canonical frame.

- `DNeRF`: the paper's MLPs (Pumarola et al., CVPR 2021): 8x256 deformation MLP on encoded
  (x, t), 8x256 canonical MLP with a skip at layer 4, density from the trunk, colour from a
  128-wide view-dependent head. Sizes come from `DNeRFConfig` (the paper's are the default).
- `FastDNeRF`: the same contract on factorised grids, after HexPlane/K-Planes: features are
  read bilinearly from axis-aligned planes and multiplied across planes, then decoded by tiny
  MLPs. The deformation uses all six planes of (x, y, z, t); the canonical field uses the
  spatial planes at two scales plus time planes (initialised to 1, so they start as a no-op),
  which lets it model what a warp cannot (objects touching, appearance), like TiNeuVox's
  time-enhanced canonical features.

Both split into `.deformation` and `.canonical`, which may live on different devices.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lab_pipelines.nerf.encoding import PositionalEncoding


def _zero_at_time_zero(dx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The canonical frame is the scene at t = 0 (as in the paper): no displacement there."""
    return torch.where(t == 0, torch.zeros_like(dx), dx)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class DeformableField(nn.Module):
    """Wires a deformation and a canonical field, each on its own device, inside the sphere of
    radius `bound`; with `occupancy_res` > 0 it also keeps a per-frame occupancy grid."""

    deformation: nn.Module
    canonical: nn.Module

    def __init__(self, bound: float, occupancy_res: int = 0, occupancy_frames: int = 1) -> None:
        super().__init__()
        self.bound = bound
        if occupancy_res:
            # Which voxels may hold anything at each training frame's time (all, until carved);
            # marching skips the rest. A query time uses the nearest frame's grid.
            res = occupancy_res
            self.register_buffer("occupancy", torch.ones(occupancy_frames, res, res, res, dtype=torch.bool))
            self.register_buffer("occupancy_times", torch.linspace(0.0, 1.0, occupancy_frames))

    @property
    def has_occupancy(self) -> bool:
        return hasattr(self, "occupancy")

    def forward(self, x: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and colour (N, 3) at points x (N, 3) seen along d (N, 3) at times t (N, 1)."""
        deform_device, canon_device = _device_of(self.deformation), _device_of(self.canonical)
        dx = self.deformation(x.to(deform_device), t.to(deform_device)).to(canon_device)
        return self.canonical(x + dx, d, t)

    def place(self, canonical_device: str, deformation_device: str) -> DeformableField:
        self.canonical.to(canonical_device)
        self.deformation.to(deformation_device)
        for name, buffer in self.named_buffers(recurse=False):
            setattr(self, name, buffer.to(canonical_device))
        return self


# --------------------------------------------------------------------------- D-NeRF (MLPs)

@dataclass
class DNeRFConfig:
    pos_freqs: int = 10
    dir_freqs: int = 4
    time_freqs: int = 10
    width: int = 256
    depth: int = 8
    skip: int = 4  # the input is concatenated again after this many layers
    deform_width: int = 256
    deform_depth: int = 8
    deform_pos_freqs: int = 10
    # 'relu' as in the paper; 'softplus' (shifted by -1, as mip-NeRF) never goes dead: with ReLU
    # a short CPU run can push every density pre-activation below zero and render only white.
    density_activation: str = "relu"
    n_coarse: int = 64
    n_fine: int = 128
    # 0: the paper's rays, clipped to the bounding sphere only. > 0: a grid of this size carved
    # from the training silhouettes shrinks each ray's interval to the part that may hold
    # something, and rays that miss it are background without a field query.
    occupancy_res: int = 0
    occupancy_frames: int = 1
    hull_probes: int = 64  # points per ray that read the grid to find that interval


class MLP(nn.Module):
    """ReLU trunk of `depth` layers; the input re-enters after layer `skip` (0: never)."""

    def __init__(self, in_dims: int, width: int, depth: int, skip: int = 0) -> None:
        super().__init__()
        self.skip = skip
        self.layers = nn.ModuleList(
            nn.Linear(in_dims if i == 0 else width + (in_dims if skip and i == skip else 0), width)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            if self.skip and i == self.skip:
                h = torch.cat([h, x], dim=-1)
            h = F.relu(layer(h))
        return h


class DeformationMLP(nn.Module):
    def __init__(self, cfg: DNeRFConfig) -> None:
        super().__init__()
        self.pos_enc = PositionalEncoding(3, cfg.deform_pos_freqs)
        self.time_enc = PositionalEncoding(1, cfg.time_freqs)
        in_dims = self.pos_enc.out_dims + self.time_enc.out_dims
        self.trunk = MLP(in_dims, cfg.deform_width, cfg.deform_depth, skip=cfg.skip)
        self.head = nn.Linear(cfg.deform_width, 3)
        # Start as the identity warp (as Nerfies/HyperNeRF do): a randomly initialised head
        # displaces every point by a high-frequency offset at t > 0 and scrambles the canonical
        # field before it has learnt anything. Training moves the head off zero.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dx = self.head(self.trunk(torch.cat([self.pos_enc(x), self.time_enc(t)], dim=-1)))
        return _zero_at_time_zero(dx, t)


class CanonicalMLP(nn.Module):
    def __init__(self, cfg: DNeRFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_enc = PositionalEncoding(3, cfg.pos_freqs)
        self.dir_enc = PositionalEncoding(3, cfg.dir_freqs)
        self.trunk = MLP(self.pos_enc.out_dims, cfg.width, cfg.depth, skip=cfg.skip)
        self.density = nn.Linear(cfg.width, 1)
        self.feature = nn.Linear(cfg.width, cfg.width)
        self.colour = nn.Sequential(
            nn.Linear(cfg.width + self.dir_enc.out_dims, cfg.width // 2), nn.ReLU(),
            nn.Linear(cfg.width // 2, 3),
        )

    def forward(self, x: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.pos_enc(x))
        raw = self.density(h).squeeze(-1)
        sigma = F.relu(raw) if self.cfg.density_activation == "relu" else F.softplus(raw - 1.0)
        rgb = torch.sigmoid(self.colour(torch.cat([self.feature(h), self.dir_enc(d)], dim=-1)))
        return sigma, rgb


class DNeRF(DeformableField):
    def __init__(self, cfg: DNeRFConfig, bound: float) -> None:
        super().__init__(bound, cfg.occupancy_res, cfg.occupancy_frames)
        self.cfg = cfg
        self.deformation = DeformationMLP(cfg)
        self.canonical = CanonicalMLP(cfg)


# --------------------------------------------------------------- fast (factorised planes)

@dataclass
class FastConfig:
    channels: int = 16
    spatial_res: tuple[int, ...] = (32, 64)  # one set of planes per scale, features concatenated
    time_res: int = 25
    deform_channels: int = 8
    deform_spatial_res: int = 32
    hidden: int = 64
    geo_features: int = 15
    dir_freqs: int = 4
    n_samples: int = 64  # candidates per ray before the occupancy grid culls empty space
    occupancy_res: int = 32
    occupancy_frames: int = 1  # set to the number of training frames when the grid is carved
    # K-Planes' regularisers, weights on losses added to the photometric one: total variation
    # of the spatial planes, and the second difference along time of the time planes. Without
    # them the planes overfit the one view each instant has (panda, 2500 steps: 33.7 dB on
    # training batches, 29.3 on test views; with these weights 31.8 and 32.5, docs/nerf.md).
    plane_tv: float = 3e-3
    time_smoothness: float = 3e-2


class PlaneGrid(nn.Module):
    """Feature planes over every pair of input axes, multiplied together (K-Planes).

    Planes that involve time (the last axis when `time_res` is set) start at 1, so the
    product starts out static and time dependence is learnt only where the data needs it.
    """

    def __init__(self, n_axes: int, channels: int, res: int, time_res: int | None = None) -> None:
        super().__init__()
        self.pairs = list(itertools.combinations(range(n_axes), 2))
        planes = []
        for a, b in self.pairs:
            is_time = time_res is not None and b == n_axes - 1
            shape = (1, channels, time_res if is_time else res, res)  # rows index b, columns a
            init = torch.ones(shape) if is_time else torch.empty(shape).uniform_(0.1, 0.5)
            planes.append(nn.Parameter(init))
        self.planes = nn.ParameterList(planes)
        self.is_time = [time_res is not None and b == n_axes - 1 for _, b in self.pairs]

    def smoothness(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Total variation of the spatial planes and squared acceleration along time of the
        time planes (each a mean of squares): one view per instant leaves space between
        cameras and time between frames underdetermined, and these fill it smoothly."""
        tv = time = torch.zeros((), device=self.planes[0].device)
        for plane, is_time in zip(self.planes, self.is_time):
            if is_time:
                time = time + (plane[:, :, 2:] - 2 * plane[:, :, 1:-1] + plane[:, :, :-2]).square().mean()
            else:
                tv = tv + (plane[:, :, 1:] - plane[:, :, :-1]).square().mean() \
                    + (plane[..., 1:] - plane[..., :-1]).square().mean()
        return tv, time

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (N, n_axes) in [-1, 1] -> features (N, channels)."""
        out = None
        for (a, b), plane in zip(self.pairs, self.planes):
            grid = coords[:, [a, b]].view(1, -1, 1, 2)
            feat = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
            feat = feat.view(plane.shape[1], -1).T
            out = feat if out is None else out * feat
        return out.contiguous()


class FastDeformation(nn.Module):
    def __init__(self, cfg: FastConfig, bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.grid = PlaneGrid(4, cfg.deform_channels, cfg.deform_spatial_res, cfg.time_res)
        self.decoder = nn.Sequential(nn.Linear(cfg.deform_channels, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3))
        # Start as the identity everywhere; the warp grows from the photometric gradient.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        coords = torch.cat([x / self.bound, 2.0 * t - 1.0], dim=-1)
        return _zero_at_time_zero(self.decoder(self.grid(coords)), t)


class FastCanonical(nn.Module):
    def __init__(self, cfg: FastConfig, bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.grids = nn.ModuleList(PlaneGrid(4, cfg.channels, res, cfg.time_res) for res in cfg.spatial_res)
        feat_dims = cfg.channels * len(cfg.spatial_res)
        self.density = nn.Sequential(nn.Linear(feat_dims, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1 + cfg.geo_features))
        # Start nearly transparent (density ~0.1) so the occupancy grid can cull empty space
        # within the first few dozen steps; surfaces then grow where the pixels demand them.
        nn.init.constant_(self.density[-1].bias[:1], math.log(0.1))
        self.dir_enc = PositionalEncoding(3, cfg.dir_freqs)
        self.colour = nn.Sequential(
            nn.Linear(cfg.geo_features + self.dir_enc.out_dims, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3))

    def _trunk(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.cat([x / self.bound, 2.0 * t - 1.0], dim=-1)
        h = self.density(torch.cat([grid(coords) for grid in self.grids], dim=-1))
        # exp keeps density sharp at surfaces; the clamp stops overflow early in training.
        return torch.exp(h[:, 0].clamp(max=15.0)), h[:, 1:]

    def forward_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._trunk(x, t)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, geo = self._trunk(x, t)
        rgb = torch.sigmoid(self.colour(torch.cat([geo, self.dir_enc(d)], dim=-1)))
        return sigma, rgb


class FastDNeRF(DeformableField):
    def __init__(self, cfg: FastConfig, bound: float) -> None:
        super().__init__(bound, cfg.occupancy_res, cfg.occupancy_frames)
        self.cfg = cfg
        self.deformation = FastDeformation(cfg, bound)
        self.canonical = FastCanonical(cfg, bound)

    def regularisation(self) -> torch.Tensor:
        """The weighted plane regularisers of every grid (0 when both weights are 0)."""
        device = self.occupancy.device
        grids = [*self.canonical.grids, self.deformation.grid]
        tv, time = (sum(term.to(device) for term in terms) for terms in zip(*(grid.smoothness() for grid in grids)))
        return self.cfg.plane_tv * tv + self.cfg.time_smoothness * time

    def canonical_grid_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.canonical.named_parameters() if ".planes." in name]

    def deformation_grid_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.deformation.named_parameters() if ".planes." in name]

    def mlp_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if ".planes." not in name]
