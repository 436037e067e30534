"""Image distances for the anchor search's end-to-end objective.

The paper scores a candidate schedule by LPIPS (AlexNet trunk) between its decoded image
and the full-compute image of the same seed and conditioning. LPIPS needs the ImageNet
AlexNet weights, which torchvision downloads on first use; on a machine that cannot
download them (and has no torch hub cache) we fall back to a *stated* metric,
``1 - SSIM``, and say so in the metric's name and note. A different metric is never
reported as LPIPS. ``psnr`` asks for pixel fidelity instead of perceptual closeness: the
objective is ``10 log10 MSE`` in dB, i.e. minus the PSNR, so a mean over seeds is the
mean PSNR that benchmarks report, with the sign turned.

Images are ComfyUI IMAGE tensors: ``[B, H, W, 3]``, float in [0, 1].

SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), C1 = (0.01)^2,
C2 = (0.03)^2 for a data range of 1, averaged over channels and pixels:

    SSIM(x, y) = ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger("otcache")


@dataclasses.dataclass(frozen=True)
class ImageMetric:
    """A per-image distance (lower is closer) with the name it is reported under."""

    name: str  # "lpips-alex", "1-ssim" or "mse-db"
    note: str  # why this metric: empty for LPIPS, the reason for a fallback
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @property
    def is_lpips(self) -> bool:
        return self.name.startswith("lpips")

    def __call__(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Distances ``[B]`` between two IMAGE batches of the same shape."""
        if images.shape != references.shape:
            raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} differ in shape")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected IMAGE tensors [B, H, W, 3], got {tuple(images.shape)}")
        with torch.no_grad():
            return self.distance(images.float(), references.float()).reshape(-1)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of two ``[B, H, W, 3]`` batches in [0, 1]."""
    x = images.permute(0, 3, 1, 2)
    y = references.permute(0, 3, 1, 2)
    size = min(11, x.shape[-1], x.shape[-2])
    window = _gaussian_window(size).to(x)[None, None].expand(3, 1, size, size)

    def blur(t):
        return F.conv2d(t, window, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def one_minus_ssim(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim(images, references)


def mse_db(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``10 log10 MSE`` per image (minus the PSNR for a data range of 1), floored at -100 dB for identical images."""
    from .metrics import psnr_per_image  # metrics imports this module's SSIM

    return -torch.from_numpy(psnr_per_image(images, references, floor=1e-10)).float()


METRIC_CHOICES = ("lpips", "ssim", "psnr")


def _default_lpips_factory():
    import lpips

    return lpips.LPIPS(net="alex", verbose=False)


def load_metric(prefer: str = "lpips", lpips_factory: Callable[[], torch.nn.Module] | None = None,
                device: torch.device | str | None = None) -> ImageMetric:
    """LPIPS (AlexNet) when its weights load, else 1 - SSIM with the reason in ``note``.

    ``prefer="ssim"`` asks for 1 - SSIM directly, ``prefer="psnr"`` for :func:`mse_db`.
    ``lpips_factory`` builds the LPIPS module (tests pass one with a random trunk, which
    loads offline).
    """
    if prefer not in METRIC_CHOICES:
        raise ValueError(f"unknown metric {prefer!r}; choose one of {', '.join(METRIC_CHOICES)}")
    if prefer == "ssim":
        return ImageMetric("1-ssim", "1 - SSIM was asked for", one_minus_ssim)
    if prefer == "psnr":
        return ImageMetric("mse-db", "pixel error in dB (10 log10 MSE, minus the PSNR) was asked for", mse_db)
    try:
        net = (lpips_factory or _default_lpips_factory)()
    except Exception as e:  # no network and no cached AlexNet weights, most often
        reason = f"LPIPS weights could not be loaded ({type(e).__name__}: {str(e)[:160]}); using 1 - SSIM instead"
        log.warning("OTCache: %s", reason)
        return ImageMetric("1-ssim", reason, one_minus_ssim)
    net = net.eval().to(device or "cpu")
    for p in net.parameters():
        p.requires_grad_(False)

    def lpips_distance(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        # LPIPS takes NCHW in [-1, 1].
        x = images.permute(0, 3, 1, 2).to(next(net.parameters()).device) * 2 - 1
        y = references.permute(0, 3, 1, 2).to(x.device) * 2 - 1
        return net(x, y).reshape(-1).cpu()

    return ImageMetric("lpips-alex", "", lpips_distance)


def subsample_frames(images: torch.Tensor, max_frames: int) -> torch.Tensor:
    """At most ``max_frames`` evenly spaced images of a decoded video ``[F, H, W, 3]``."""
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    count = images.shape[0]
    if count <= max_frames:
        return images
    index = torch.linspace(0, count - 1, max_frames).round().long()
    return images[index]
