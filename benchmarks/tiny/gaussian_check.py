"""Before training: what a closed-form Gaussian denoiser of the data set says about caching schedules.

The data latents of a family (``--family``; images, or clips for HunyuanVideo) are
modelled as a *stationary* Gaussian: a per-channel mean and, per (temporal and) spatial
frequency k, a 16x16 channel covariance C_k (frequencies uncorrelated), estimated from
``--images`` training samples. Its exact denoiser for ``x_t = (1 - s) x0 + s n`` is, per
frequency, ``x0_hat = mu + (1 - s) C_k ((1 - s)^2 C_k + s^2 I)^-1 (x_t - (1 - s) mu)``,
and the velocity is ``(x_t - x0_hat) / s``. Euler over ComfyUI's ``simple`` sigmas of
the family's own model sampling (FLUX: flux shift 1.15, Qwen-Image: 1.15, HunyuanVideo:
discrete flow shift 7; ``--shift`` overrides), N steps, as the KSampler would run them.

Then, exactly like the OTCache Reference with ``global`` edge costs and ``output`` reuse
(the velocity of step i is reused on i+1..j-1; tails start from the recorded x_i):
the cost matrix over ``--seeds`` noises, the minimax path at the budget of the family's
published schedule (``--preset``, resampled to N steps), its W1 distance to that
schedule and the uniform one's, and PSNR (decoded pixels)
of published vs uniform vs reference against full compute on fresh noises.

Cheap (seconds to a minute on CPU), so it is the way to design the data set: a layout
that is decided early shows up as costly early edges and a front-loaded reference.

    .venv/bin/python benchmarks/tiny/gaussian_check.py [--family flux] [--steps 50] [--shift S]
"""
from __future__ import annotations

from benchmarks.tiny.common import HERE, data, get_family, training_latents

import argparse
import json

import comfy.model_sampling  # noqa: E402
import comfy.samplers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.tiny.acceptance import PUBLISHED  # noqa: E402
from comfyui_otcache.demo.tiny_models import build_tiny_model  # noqa: E402
from comfyui_otcache.otcache_core.edge_costs import error, window_edges  # noqa: E402
from comfyui_otcache.otcache_core.graph import best_path  # noqa: E402
from comfyui_otcache.otcache_core.metrics import psnr_per_image  # noqa: E402
from comfyui_otcache.otcache_core.presets import load_preset  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import (
    resample,  # noqa: E402
    w1_steps,  # noqa: E402
)


class GaussianDenoiser:
    def __init__(self, latents: torch.Tensor):
        x = latents.double()  # [B, C, *space] (space: H, W or T, H, W)
        self.dims = tuple(range(2, x.ndim))
        self.mu = x.mean(dim=(0, *self.dims))  # [C]
        f = self._to_freq(x - self._mu_like(x))  # [*space, C, B]
        self.cov = (f @ f.conj().transpose(-1, -2)) / x.shape[0]  # [*space, C, C]
        self.eye = torch.eye(x.shape[1], dtype=torch.complex128)
        self.gains: dict[float, torch.Tensor] = {}

    def gain(self, s: float) -> torch.Tensor:
        """Per frequency ``(1 - s) C ((1 - s)^2 C + s^2 I)^-1`` (C and the inverse commute), cached per sigma."""
        if s not in self.gains:
            a = (1 - s) ** 2 * self.cov + s * s * self.eye
            self.gains[s] = (1 - s) * torch.linalg.solve(a, self.cov)
        return self.gains[s]

    def _mu_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu.view(1, -1, *[1] * len(self.dims))

    def _to_freq(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.fft.fftn(x, dim=self.dims, norm="ortho")
        return f.permute(*self.dims, 1, 0)

    def _from_freq(self, f: torch.Tensor) -> torch.Tensor:
        k = len(self.dims)
        f = f.permute(k + 1, k, *range(k))  # [B, C, *space]
        return torch.fft.ifftn(f, dim=self.dims, norm="ortho").real

    def denoise(self, xt: torch.Tensor, s: float) -> torch.Tensor:
        mu = self._mu_like(xt)
        return mu + self._from_freq(self.gain(s) @ self._to_freq(xt - (1 - s) * mu))

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-skip", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--family", default="flux", help="flux, qwen_image or hunyuan_video")
    ap.add_argument("--shift", type=float, default=None, help="override the family's model-sampling shift")
    ap.add_argument("--preset", default=None, help="published schedule (default: the family's at 50 steps, budget 10)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    sampling = build_tiny_model(fam.name, 0, **fam.arch).model.model_sampling
    if args.shift is not None:
        sampling.set_parameters(shift=args.shift, **({"multiplier": sampling.multiplier}
                                                     if hasattr(sampling, "multiplier") else {}))
    codec = data.PatchCodec()
    lat = torch.cat([training_latents(fam, 12345, k, 64, codec)[1] for k in range(args.images // 64)])
    model = GaussianDenoiser(lat)
    n = args.steps
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", n).double()
    published = resample(load_preset(args.preset or PUBLISHED[fam.name]), n)
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
        return psnr_per_image(codec.decode(out.float(), internal=True), full_px)

    p_pub, p_uni, p_ref = psnr(published), psnr(uniform), psnr(reference)
    result = {
        "family": fam.name, "shift": float(sampling.shift), "steps": n, "budget": budget, "max_skip": args.max_skip,
        "reuse": "output (velocity)",
        "published": list(published.compute), "uniform": list(uniform.compute), "reference": list(reference.compute),
        "w1_reference_published": w1_steps(reference, published),
        "w1_uniform_published": w1_steps(uniform, published),
        "psnr_published_mean": float(p_pub.mean()), "psnr_uniform_mean": float(p_uni.mean()),
        "psnr_reference_mean": float(p_ref.mean()),
        "published_beats_uniform": f"{int((p_pub > p_uni).sum())}/{len(p_pub)}",
    }
    print(json.dumps(result, indent=1))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    tag = "" if args.shift is None else f"_shift{args.shift:g}"
    (out / f"gaussian_check_{fam.name}_{n}{tag}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
