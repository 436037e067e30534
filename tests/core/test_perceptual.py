"""Image metrics for the anchor objective: LPIPS when it loads, a stated 1 - SSIM otherwise."""
from __future__ import annotations

import lpips
import pytest
import torch

from comfyui_otcache.otcache_core.perceptual import load_metric, ssim, subsample_frames


def images(seed: int, batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(seed))


def test_lpips_path_with_a_random_trunk_loads_offline():
    metric = load_metric(lpips_factory=lambda: lpips.LPIPS(net="alex", pnet_rand=True, verbose=False))
    assert metric.name == "lpips-alex" and metric.is_lpips and metric.note == ""
    a, b = images(0), images(1)
    same, different = metric(a, a), metric(a, b)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (different > 0.01).all()


def test_fallback_is_stated_never_reported_as_lpips():
    def offline():
        raise OSError("no network: could not download alexnet")

    metric = load_metric(lpips_factory=offline)
    assert metric.name == "1-ssim" and not metric.is_lpips
    assert "LPIPS weights could not be loaded" in metric.note and "no network" in metric.note
    a = images(0)
    assert torch.allclose(metric(a, a), torch.zeros(2), atol=1e-5)


def test_ssim_orders_distortions():
    a = images(3, batch=1, size=48)
    slightly = (a + 0.02 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    heavily = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > ssim(a, slightly).item() > ssim(a, heavily).item()


def test_bad_inputs_are_refused():
    metric = load_metric(prefer="ssim")
    with pytest.raises(ValueError, match="differ in shape"):
        metric(images(0, size=32), images(0, size=16))
    with pytest.raises(ValueError, match=r"expected IMAGE tensors \[B, H, W, 3\]"):
        metric(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric(prefer="mse")


def test_psnr_objective_is_minus_the_benchmarks_psnr():
    from comfyui_otcache.otcache_core.metrics import psnr

    metric = load_metric(prefer="psnr")
    assert metric.name == "mse-db" and not metric.is_lpips and "asked for" in metric.note
    a = images(6, batch=1)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(7))).clamp(0, 1)
    assert metric(noisy, a).item() == pytest.approx(-psnr(noisy, a), abs=1e-3)
    assert metric(a, a).item() == pytest.approx(-100.0)  # identical images: the floor, not -inf


def test_subsample_frames_keeps_first_and_last():
    frames = torch.arange(10).float().reshape(10, 1, 1, 1).expand(10, 2, 2, 3)
    picked = subsample_frames(frames, 4)
    assert picked[:, 0, 0, 0].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert subsample_frames(frames, 20).shape[0] == 10
