"""Wall time of OTCache's Cached Model against plain sampling, side by side in one process.

A tiny FLUX scaled up until the transformer dominates (hidden 384, 4 double + 8 single
blocks, 32x32 latent = 256 image tokens), sampled with ComfyUI's own KSampler path:
no cache, the full schedule (the wrapper's overhead), and uniform schedules at speedups
2, 3 and 4.5, each in ``block`` and ``output`` mode. Runs are interleaved round by round,
and every speedup is a ratio *within* a round (the no-cache run of the same round), so drift
of a shared machine hits both sides alike. Reported: the median of the per-round ratios and
their range over the rounds (the spread); wall seconds as the minimum and the range. A
speedup above N/K is marked as noise, and an overhead is claimed only where it exceeds the
spread (:func:`verdict`).

    .venv/bin/python benchmarks/speed.py [--steps 28] [--rounds 7] [--out benchmarks/results/speed.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from devtools.host import import_comfy, import_pack  # noqa: E402

import_comfy()
import_pack()

import comfy.model_management  # noqa: E402
import comfy.sample  # noqa: E402
import torch  # noqa: E402

from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_conditioning, tiny_latent  # noqa: E402
from comfyui_otcache.otcache_comfy.cache_runtime import apply_otcache  # noqa: E402
from comfyui_otcache.otcache_core.interpolate import budget_for_speedup  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402

BIG_FLUX = {"hidden_size": 384, "num_heads": 6, "axes_dim": [16, 24, 24], "depth": 4,
            "depth_single_blocks": 8, "mlp_ratio": 4.0}


def verdict(median: float, low: float, high: float, ideal: float) -> str:
    """What a row may claim: an overhead only beyond the spread, and never more than N/K."""
    if median > ideal * 1.005:
        return "above N/K: timing noise, not a result"
    if high >= ideal:
        return f"within noise of N/K (spread {100 * (high - low) / ideal:.1f}% of it)"
    return f"overhead {100 * (1 - median / ideal):.1f}% of N/K, beyond the spread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latent", type=int, default=32, help="latent height and width")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_tiny_model("flux", seed=0, scale=0.5, **BIG_FLUX)
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    positive, negative = tiny_conditioning("flux", 1, tokens=16), tiny_conditioning("flux", 2, tokens=16)
    latent = tiny_latent("flux", height=args.latent, width=args.latent)["samples"]
    noise = comfy.sample.prepare_noise(latent, 0)
    n = args.steps

    variants: list[tuple[str, str, object]] = [("no cache", "-", model)]
    for mode in ("block", "output"):
        variants.append((f"full schedule ({n}/{n})", mode, apply_otcache(model, Schedule.full(n), reuse=mode)))
        for speedup in (2.0, 3.0, 4.5):
            schedule = Schedule.uniform(n, budget_for_speedup(n, speedup))
            variants.append((f"uniform {schedule.budget}/{n} (N/K={n / schedule.budget:.2f})", mode,
                             apply_otcache(model, schedule, reuse=mode)))

    def run(m) -> float:
        start = time.perf_counter()
        comfy.sample.sample(m, noise, n, 3.5, "euler", "simple", positive, negative, latent, seed=0,
                            disable_pbar=True)
        return time.perf_counter() - start

    run(model)  # warm-up: allocator, kernels
    times: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    for r in range(args.rounds):
        for i, (_, _, m) in enumerate(variants):
            times[i].append(run(m))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    device = comfy.model_management.get_torch_device()
    lines = [
        f"Tiny FLUX ({params / 1e6:.1f}M parameters, {args.latent}x{args.latent} latent, "
        f"{args.latent * args.latent // 4} image tokens), euler, {n} steps, cfg 3.5 (cond+uncond batched), "
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} interleaved "
        "rounds. Speedup: median of the per-round ratios no-cache / this run, [range over rounds]; "
        "wall s: fastest round [slowest].",
        "",
        "| schedule | reuse | wall s | speedup vs no cache [range] | ideal N/K | % of ideal [range] | reading |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for i, (name, mode, m) in enumerate(variants):
        ratios = [base / t for base, t in zip(times[0], times[i])]
        ideal = n / int(name.split()[1].split("/")[0]) if "uniform" in name else 1.0
        med, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
        lines.append(f"| {name} | {mode} | {min(times[i]):.3f} [{max(times[i]):.3f}] | {med:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{ideal:.2f} | {100 * med / ideal:.1f}% [{100 * lo / ideal:.1f}, {100 * hi / ideal:.1f}] | "
                     f"{verdict(med, lo, hi, ideal) if i else 'baseline'} |")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
