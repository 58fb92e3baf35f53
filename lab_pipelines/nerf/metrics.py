"""Image quality: PSNR, and SSIM from pytorch_msssim (Gaussian window 11, sigma 1.5)."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _ssim


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for values in [0, 1]."""
    mse = torch.mean((pred.float().clamp(0, 1) - target.float()) ** 2)
    return -10.0 * torch.log10(mse.clamp(min=1e-12))


def mean_view_psnr(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """PSNR per image (N, H, W, 3), averaged over images, as NeRF papers report it."""
    return float(torch.stack([psnr(p, g) for p, g in zip(preds, targets)]).mean())


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of images (N, H, W, 3) in [0, 1]."""
    return _ssim(_nchw(pred), _nchw(target), data_range=1.0, size_average=True)


def _nchw(images: torch.Tensor) -> torch.Tensor:
    return images.float().clamp(0, 1).permute(0, 3, 1, 2)
