"""Acceptance check of a trained tiny model against the published schedule of its family.

1. Global-cost reference: for each of ``--prompts`` held-out prompts, a ``global`` edge-cost
   calibration (``otcache_comfy.calibration.calibrate``: tails sampled from the recorded full
   run, final-latent error) over ``--seeds`` seeds, euler / simple / ``--steps`` N / the model's cfg,
   window ``--max-skip`` W; the per-prompt mean cost matrices are averaged and the
   minimax path with budget ``round(N/5)`` is the reference.
2. W1 distance between quantile functions (``otcache_core.warp.warp``), in steps of N:
   ``(N-1) * integral_0^1 |Q_a(u) - Q_b(u)| du``, reference vs the published
   budget-N/5 schedule (resampled to N when N != 50), and uniform vs published.
3. PSNR and SSIM (decoded with the fixed codec of demo/tiny_data.py) of the published
   schedule, of uniform and of the reference, against full compute, on ``--eval``
   held-out prompts, for each cache reuse mode (``block``, ``residual``, ``output``):
   the measurement behind the runtime's ``reuse=auto`` default.

Cost: global calibration is about N^2 W / 2 model evaluations per prompt and seed, so on
2 CPU cores N=50, W=8 is hours; ``--steps 28 --max-skip 6`` is the CPU default.

    .venv/bin/python benchmarks/tiny/check_schedules.py --family flux [--steps 28] [--max-skip 6] [--prompts 2] [--seeds 1]
"""
from __future__ import annotations

from benchmarks.tiny.common import (
    FAMILIES,
    HERE,
    codec_for,
    conditioning,
    data,
    empty_latent,
    get_family,
    load_trained,
    token_layout,
)

import argparse
import json
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.tiny.acceptance import PUBLISHED  # noqa: E402
from comfyui_otcache.demo.tiny import split_prompts  # noqa: E402
from comfyui_otcache.otcache_comfy.calibration import SamplingSetup, calibrate  # noqa: E402
from comfyui_otcache.otcache_core.edge_costs import CostMatrix  # noqa: E402
from comfyui_otcache.otcache_core.graph import best_path  # noqa: E402
from comfyui_otcache.otcache_core.metrics import psnr, ssim  # noqa: E402
from comfyui_otcache.otcache_core.presets import load_preset  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import (
    resample,  # noqa: E402
    w1_steps,  # noqa: E402
)

MODES = ("block", "residual", "output")


def setup_for(model, fam, prompt, steps: int, cfg: float = 1.0, layout: str = "object") -> SamplingSetup:
    """euler / simple at the model's own cfg, negative = the empty prompt (training's conditioning dropout)."""
    return SamplingSetup(model, conditioning(fam, [prompt], layout), conditioning(fam, [None], layout),
                         empty_latent(fam), "euler", "simple", steps, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux", choices=list(FAMILIES))
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--max-skip", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--eval", type=int, default=8, help="held-out prompts for PSNR")
    ap.add_argument("--reuse", default="block", help="reuse mode used for calibration")
    ap.add_argument("--weights", type=Path, help="weights file (default: weights/<family>.safetensors)")
    ap.add_argument("--sampling-shift", type=float, default=None,
                    help="sample at this model-sampling shift instead of the weights' own (FLUX: mu)")
    ap.add_argument("--costs", type=Path, help="a cost matrix (.npy) saved by an earlier run: skip calibration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.steps
    fam = get_family(args.family)
    model, meta = load_trained(args.family, args.weights, args.sampling_shift)
    published = resample(load_preset(PUBLISHED[fam.name]), n)
    budget = published.budget
    uniform = Schedule.uniform(n, budget)
    cfg = float(meta.get("cfg", 1.0))
    layout = token_layout(meta)
    cal_prompts, eval_prompts = split_prompts("calibration", args.prompts), data.held_out_prompts(args.eval)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    if args.costs:
        costs = np.load(args.costs)
    else:
        matrices = []
        for k, p in enumerate(cal_prompts):
            setup = setup_for(model, fam, p, n, cfg, layout)
            matrix = CostMatrix.new(n, args.max_skip, args.seeds, "global")
            stats = calibrate(setup, 1000 + k * 100, matrix, args.reuse)
            matrices.append(matrix.costs())
            print(f"calibrated prompt {k} ({p.text()}): {stats.evaluations} evaluations, {stats.seconds:.0f} s",
                  flush=True)
        costs = np.mean(matrices, axis=0)
    reference = Schedule(n, best_path(costs, budget, "minimax"), source="reference")
    result = {
        "model": meta, "steps": n, "budget": budget, "max_skip": args.max_skip, "reuse": args.reuse,
        "calibration_prompts": ([p.text() for p in cal_prompts] if not args.costs
                                else f"none: cost matrix read from {args.costs}"), "seeds": args.seeds,
        "published": list(published.compute), "uniform": list(uniform.compute), "reference": list(reference.compute),
        "w1_reference_published": w1_steps(reference, published),
        "w1_uniform_published": w1_steps(uniform, published),
        "calibration_seconds": time.perf_counter() - start,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=1), flush=True)
    np.save(args.out / f"{args.family}_global_costs_{n}.npy", costs)

    codec = codec_for(model)
    rows = []
    fulls = {}
    for mode in MODES:
        for k, p in enumerate(eval_prompts):
            setup = setup_for(model, fam, p, n, cfg, layout)
            seed = 5000 + k
            if k not in fulls:
                fulls[k] = codec.decode(setup.sample(seed).final)
            full = fulls[k]
            row = {"mode": mode, "prompt": p.text()}
            for name, sched in (("published", published), ("uniform", uniform), ("reference", reference)):
                img = codec.decode(setup.sample(seed, sched, mode).final)
                row[name] = psnr(img, full)
                row[name + "_ssim"] = float(ssim(img, full).mean())
            rows.append(row)
            print(row, flush=True)
    for mode in MODES:
        r = [x for x in rows if x["mode"] == mode]
        margin = [x["published"] - x["uniform"] for x in r]
        result[f"psnr_{mode}"] = {
            **{f"{m}_mean": float(np.mean([x[m] for x in r])) for m in ("published", "uniform", "reference")},
            **{f"{m}_ssim_mean": float(np.mean([x[m + "_ssim"] for x in r]))
               for m in ("published", "uniform", "reference")},
            "published_minus_uniform_mean": float(np.mean(margin)),
            "published_wins": int(sum(m > 0 for m in margin)), "prompts": len(r)}
    result["psnr_rows"] = rows
    (args.out / f"{args.family}_check_{n}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("w1_reference_published", "w1_uniform_published",
                                             *[f"psnr_{m}" for m in MODES])}, indent=1))


if __name__ == "__main__":
    main()
