"""Where does a tiny model commit to its image? The change of its denoised estimate from step to step.

Along full-compute sampling (euler / simple, N steps) of held-out prompts, the relative
change of the denoised estimate, ``||x0_hat(t+1) - x0_hat(t)|| / ||x0_hat(N-1)||``, per step,
mean over prompts: conditioned at the model's cfg, unconditioned (cfg 1, the empty
prompt), and for the closed-form Gaussian denoiser of the data (``gaussian_check.py``;
unconditioned, with the same sigmas). A model that settles its image early changes most
in the first steps; skipping those costs most, which is what the front-loaded published
schedules assume of the real models. Cheap: a minute at 1 thread.

    .venv/bin/python benchmarks/tiny/step_changes.py --family flux --weights W [--sampling-shift 0.5]
"""
from __future__ import annotations

from benchmarks.tiny.common import data, get_family, load_trained, token_layout, training_latents

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.tiny.check_schedules import setup_for
from benchmarks.tiny.gaussian_check import GaussianDenoiser
from benchmarks.tiny.gaussian_check import sample as gaussian_sample


def relative_changes(denoised) -> list[float]:
    """``||d[t+1] - d[t]|| / ||d[-1]||`` for a list of per-step denoised latents."""
    d = torch.stack([x.double() for x in denoised])
    final = float(d[-1].flatten().norm())
    return [float((d[t + 1] - d[t]).flatten().norm()) / final for t in range(len(d) - 1)]


def gaussian_changes(fam, sigmas: torch.Tensor, count: int) -> list[float]:
    """The same curve for the closed-form Gaussian denoiser of the data (unconditioned)."""
    codec = data.PatchCodec()
    latents = torch.cat([training_latents(fam, 12345, k, 64, codec)[1] for k in range(16)])
    model = GaussianDenoiser(latents)
    noise = torch.randn((count, *latents.shape[1:]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, xs = gaussian_sample(model, sigmas, noise)
    denoised = [model.denoise(x, float(s)) for x, s in zip(xs, sigmas)]
    return list(np.mean([relative_changes([d[b] for d in denoised]) for b in range(count)], axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sampling-shift", type=float, default=None, help="override the weights' sampling shift")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the curves here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    model, meta = load_trained(args.family, args.weights, args.sampling_shift)
    cfg, layout = float(meta.get("cfg", 1.0)), token_layout(meta)
    curves = {}
    for name, run_cfg, conditioned in ((f"conditioned, cfg {cfg:g}", cfg, True), ("unconditioned", 1.0, False)):
        runs = []
        for k, prompt in enumerate(data.held_out_prompts(args.prompts)):
            setup = setup_for(model, fam, prompt if conditioned else None, args.steps, run_cfg, layout)
            runs.append(relative_changes(setup.sample(500 + k, None, record=True).denoised))
        curves[name] = list(np.mean(runs, axis=0))
    sigmas = setup.sigmas
    curves["Gaussian denoiser"] = gaussian_changes(fam, sigmas, args.prompts)
    print("step sigma " + " ".join(f"{name:>14s}" for name in curves))
    for t in range(args.steps - 1):
        print(f"{t:4d} {float(sigmas[t + 1]):.3f} " + " ".join(f"{c[t]:14.3f}" for c in curves.values()))
    if args.out:
        args.out.write_text(json.dumps({"family": args.family, "weights": str(args.weights),
                                        "sampling_shift": meta.get("sampling_shift"), "steps": args.steps,
                                        "sigmas": [float(s) for s in sigmas], "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
