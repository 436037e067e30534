"""Before training: what a closed-form Gaussian denoiser of the data set says about caching schedules.

The data latents (benchmarks/tiny/data.py) are modelled as a *stationary* Gaussian:
a per-channel mean and, per spatial frequency k, a 16x16 channel covariance C_k
(frequencies uncorrelated), estimated from ``--images`` training images. Its exact
denoiser for ``x_t = (1 - s) x0 + s n`` is, per frequency,
``x0_hat = mu + (1 - s) C_k ((1 - s)^2 C_k + s^2 I)^-1 (x_t - (1 - s) mu)``, and the
velocity is ``(x_t - x0_hat) / s``. Euler over ComfyUI's ``simple`` sigmas of FLUX's
model sampling (shift 1.15), N steps, as the KSampler would run them.

Then, exactly like the OTCache Reference with ``global`` edge costs and ``output`` reuse
(the velocity of step i is reused on i+1..j-1; tails start from the recorded x_i):
the cost matrix over ``--seeds`` noises, the minimax path at budget N/5, its W1 distance
to the published FLUX.1-dev schedule and the uniform one's, and PSNR (decoded pixels)
of published vs uniform vs reference against full compute on fresh noises.

Cheap (seconds to a minute on CPU), so it is the way to design the data set: a layout
that is decided early shows up as costly early edges and a front-loaded reference.

    .venv/bin/python benchmarks/tiny/gaussian_check.py [--steps 50] [--max-skip 8] [--seeds 8]
"""
from __future__ import annotations

import argparse
import json

from common import HERE, data

import numpy as np  # noqa: E402
import torch  # noqa: E402

import comfy.model_sampling  # noqa: E402
import comfy.samplers  # noqa: E402

from comfyui_otcache.otcache_core.edge_costs import error, window_edges  # noqa: E402
from comfyui_otcache.otcache_core.graph import best_path  # noqa: E402
from comfyui_otcache.otcache_core.presets import load_preset  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import resample, warp  # noqa: E402


class GaussianDenoiser:
    def __init__(self, latents: torch.Tensor):
        x = latents.double()  # [B, C, H, W]
        self.mu = x.mean(dim=(0, 2, 3))  # [C]
        f = torch.fft.fft2(x - self.mu[None, :, None, None], norm="ortho")  # [B, C, H, W]
        f = f.permute(2, 3, 1, 0)  # [H, W, C, B]
        self.cov = (f @ f.conj().transpose(-1, -2)) / x.shape[0]  # [H, W, C, C]
        self.eye = torch.eye(x.shape[1], dtype=torch.complex128)
        self.gains: dict[float, torch.Tensor] = {}

    def gain(self, s: float) -> torch.Tensor:
        """Per frequency ``(1 - s) C ((1 - s)^2 C + s^2 I)^-1`` (C and the inverse commute), cached per sigma."""
        if s not in self.gains:
            a = (1 - s) ** 2 * self.cov + s * s * self.eye
            self.gains[s] = (1 - s) * torch.linalg.solve(a, self.cov)
        return self.gains[s]

    def denoise(self, xt: torch.Tensor, s: float) -> torch.Tensor:
        mu = self.mu[None, :, None, None]
        f = torch.fft.fft2(xt - (1 - s) * mu, norm="ortho").permute(2, 3, 1, 0)  # [H, W, C, B]
        g = self.gain(s) @ f
        x0 = torch.fft.ifft2(g.permute(3, 2, 0, 1), norm="ortho").real
        return mu + x0

    def velocity(self, xt: torch.Tensor, s: float) -> torch.Tensor:
        return (xt - self.denoise(xt, s)) / s


def sample(model: GaussianDenoiser, sigmas, noise, compute=None, start=0, x=None, v_cache=None):
    """Euler; steps not in ``compute`` reuse the last computed velocity (``output`` reuse)."""
    n = len(sigmas) - 1
    x = noise * sigmas[0] if x is None else x.clone()
    xs = []
    v = v_cache
    for i in range(start, n):
        xs.append(x)
        if compute is None or i in compute:
            v = model.velocity(x, float(sigmas[i]))
        x = x + (float(sigmas[i + 1]) - float(sigmas[i])) * v
    return x, xs


def w1_steps(a: Schedule, b: Schedule, steps: int) -> float:
    u = np.linspace(0.0, 1.0, 4001)
    return float(np.trapezoid(np.abs(warp(a)(u) - warp(b)(u)), u) * (steps - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-skip", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--preset", default="lemica-flux1-dev-50-10")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = data.PatchCodec()
    lat = torch.cat([codec.encode(data.sample_batch(12345, k, 64)[1]) for k in range(args.images // 64)])
    model = GaussianDenoiser(lat)
    n = args.steps
    sigmas = comfy.samplers.calculate_sigmas(comfy.model_sampling.ModelSamplingFlux(), "simple", n).double()
    published = resample(load_preset(args.preset), n)
    budget = published.budget
    uniform = Schedule.uniform(n, budget)

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((args.seeds, *lat.shape[1:]), generator=gen, dtype=torch.float64)
    final, xs = sample(model, sigmas, noise)
    costs = np.full((n, n), np.inf)
    for i in range(n - 1):
        costs[i, i + 1] = 0.0
    for i, j in window_edges(n, args.max_skip):
        if j == i + 1:
            continue
        compute = {i, *range(j, n)}
        out, _ = sample(model, sigmas, None, compute, start=i, x=xs[i])
        costs[i, j] = np.mean([error(out[s], final[s]) for s in range(args.seeds)])
    reference = Schedule(n, best_path(costs, budget, "minimax"), source="reference")

    noise = torch.randn((args.eval, *lat.shape[1:]), generator=gen, dtype=torch.float64)
    full, _ = sample(model, sigmas, noise)
    full_px = codec.decode(full.float(), internal=True)

    def psnr(s: Schedule) -> np.ndarray:
        out, _ = sample(model, sigmas, noise, set(s.compute))
        mse = ((codec.decode(out.float(), internal=True) - full_px) ** 2).mean(dim=(1, 2, 3)).numpy()
        return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))

    p_pub, p_uni, p_ref = psnr(published), psnr(uniform), psnr(reference)
    result = {
        "steps": n, "budget": budget, "max_skip": args.max_skip, "reuse": "output (velocity)",
        "published": list(published.compute), "uniform": list(uniform.compute), "reference": list(reference.compute),
        "w1_reference_published": w1_steps(reference, published, n),
        "w1_uniform_published": w1_steps(uniform, published, n),
        "psnr_published_mean": float(p_pub.mean()), "psnr_uniform_mean": float(p_uni.mean()),
        "psnr_reference_mean": float(p_ref.mean()),
        "published_beats_uniform": f"{int((p_pub > p_uni).sum())}/{len(p_pub)}",
    }
    print(json.dumps(result, indent=1))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"gaussian_check_{n}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
