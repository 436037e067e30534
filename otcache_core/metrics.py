"""Fidelity metrics on decoded images: PSNR and SSIM (one copy for the nodes, benchmarks, demo and tests).

Images are ``[B, H, W, 3]`` in [0, 1] (ComfyUI's IMAGE layout). PSNR is
``10 log10(1 / MSE)`` over all pixels and channels; identical images have no finite PSNR,
so a cap stands in for infinity where a table needs a number.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .perceptual import ssim

__all__ = ["PSNR_CAP", "psnr", "psnr_per_image", "ssim"]

PSNR_CAP = 99.0  # dB, for identical images


def psnr(images: torch.Tensor | np.ndarray, references: torch.Tensor | np.ndarray, cap: float | None = PSNR_CAP) -> float:
    """PSNR (dB) of two image batches (tensors or arrays) as one number; ``cap=None`` gives inf for identical ones."""
    a = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).double()
    b = torch.as_tensor(np.asarray(references) if not isinstance(references, torch.Tensor) else references).double()
    mse = float(((a - b) ** 2).mean())
    value = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return value if cap is None else min(cap, value)


def psnr_per_image(images: torch.Tensor, references: torch.Tensor, floor: float = 1e-12) -> np.ndarray:
    """PSNR (dB) of each image of a batch, ``[B]``."""
    mse = ((images.double() - references.double()) ** 2).reshape(len(images), -1).mean(1).numpy()
    return 10 * np.log10(1.0 / np.maximum(mse, floor))
