"""Positional encoding (Mildenhall et al., 2020): x -> [x, sin(2^k x), cos(2^k x)], k < n_freqs.

Frequencies are 2^k without the paper's pi, as in the NeRF and D-NeRF code: with pi the top
octaves of a 10-frequency encoding sit ~1.7 octaves further above what a low-resolution image
can resolve, and the deformation MLP, whose gradient flows through the canonical field's
encoding, only learnt noise (docs/nerf.md).
"""

from __future__ import annotations

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    def __init__(self, in_dims: int, n_freqs: int, include_input: bool = True) -> None:
        super().__init__()
        self.in_dims, self.include_input = in_dims, include_input
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    @property
    def out_dims(self) -> int:
        return self.in_dims * (int(self.include_input) + 2 * len(self.freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x[..., None] * self.freqs).flatten(-2)  # (..., in_dims * n_freqs)
        parts = [x] if self.include_input else []
        return torch.cat(parts + [torch.sin(scaled), torch.cos(scaled)], dim=-1)
