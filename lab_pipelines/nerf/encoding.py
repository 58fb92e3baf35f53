"""Positional encoding (Mildenhall et al., 2020): x -> [x, sin(2^k pi x), cos(2^k pi x)]."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    def __init__(self, in_dims: int, n_freqs: int, include_input: bool = True) -> None:
        super().__init__()
        self.in_dims, self.include_input = in_dims, include_input
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    @property
    def out_dims(self) -> int:
        return self.in_dims * (int(self.include_input) + 2 * len(self.freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x[..., None] * self.freqs).flatten(-2)  # (..., in_dims * n_freqs)
        parts = [x] if self.include_input else []
        return torch.cat(parts + [torch.sin(scaled), torch.cos(scaled)], dim=-1)
