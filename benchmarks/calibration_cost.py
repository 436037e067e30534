"""Calibration cost: OTCache Reference's ``fast`` default against the exact ``global`` calibration.

On the trained tiny models, for each model and step count, on the benchmark's first
calibration prompt and seed (``benchmarks/targets.py``), with the benchmark's window
(``run.auto_window``: the 6x budget still has a choice of paths) and the model's ``auto`` reuse:

- transformer evaluations, model calls and wall time of ``global`` (exact, one run per
  edge), ``global`` with ``tail_batch`` 4, ``fast`` and ``fast`` with ``tail_batch`` 4;
- W1 (steps, between quantile functions) of the fast minimax schedules to the exact
  ones at budgets N/2 and N/5;
- held-out fidelity: mean PSNR (decoded) against full compute of both schedules, on the
  benchmark's held-out prompts and seeds (``--eval`` of them; never calibrated on).

Writes ``benchmarks/results/calibration_cost.json`` and ``.md``. ``--matrices DIR`` saves the matrices for
``fast_cost_ideas.py``; ``--skip-batched`` leaves out the ``tail_batch`` 4 runs.

    .venv/bin/python benchmarks/calibration_cost.py [--models flux,qwen_image,hunyuan_video] [--steps 28,50]
"""
from __future__ import annotations

from benchmarks.tiny.common import REPO

import argparse
import json
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.run import auto_window, budgets_for  # noqa: E402
from benchmarks.targets import TINY_FAMILIES, prompt_seeds, tiny_target  # noqa: E402
from comfyui_otcache.otcache_comfy.cache_runtime import resolve_reuse  # noqa: E402
from comfyui_otcache.otcache_comfy.calibration import SamplingSetup, calibrate  # noqa: E402
from comfyui_otcache.otcache_core.edge_costs import CostMatrix, arrival_key  # noqa: E402
from comfyui_otcache.otcache_core.graph import best_path  # noqa: E402
from comfyui_otcache.otcache_core.metrics import psnr  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import w1_steps  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
VARIANTS = (("global", 1), ("global", 4), ("fast", 1), ("fast", 4))


class CallCounter:
    """Forward calls of the diffusion model (one per batched model call)."""

    def __init__(self, model):
        self.calls = 0
        model.model.diffusion_model.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def calibrations(setup: SamplingSetup, seed: int, window: int, mode: str, counter: CallCounter,
                 batched: bool = True, seeds: int = 1) -> dict:
    out = {}
    for edge_cost, batch in VARIANTS if batched else [v for v in VARIANTS if v[1] == 1]:
        matrix = CostMatrix.new(setup.steps, window, seeds, edge_cost)
        calls, start = counter.calls, time.perf_counter()
        stats = calibrate(setup, seed, matrix, mode, tail_batch=batch)
        out[f"{edge_cost}/{batch}"] = {"matrix": matrix, "evaluations": stats.evaluations,
                                       "model_calls": counter.calls - calls,
                                       "seconds": round(time.perf_counter() - start, 2)}
    return out


def held_out_psnr(target, steps: int, schedules: dict[str, Schedule], mode: str, seeds: list[int],
                  mean: bool = True) -> dict:
    """Mean PSNR against full compute of each schedule on the held-out prompts (per prompt without ``mean``)."""
    scores = {name: [] for name in schedules}
    for (pos, neg), seed in zip(target.eval_conds, seeds):
        setup = SamplingSetup(target.model, pos, neg, target.latent, target.sampler, target.scheduler, steps,
                              float(target.cfg))
        full = target.frames(setup.sample(seed).final)
        for name, schedule in schedules.items():
            scores[name].append(psnr(target.frames(setup.sample(seed, schedule, mode).final), full))
    if not mean:
        return {name: [float(x) for x in v] for name, v in scores.items()}
    return {name: round(float(np.mean(v)), 3) for name, v in scores.items()}


def save_matrices(folder: Path, name: str, runs: dict) -> None:
    """The exact and fast matrices and the fast arrival errors, as ``fast_cost_ideas.py`` replays them."""
    folder.mkdir(parents=True, exist_ok=True)
    exact, fast = runs["global/1"]["matrix"], runs["fast/1"]["matrix"]
    np.save(folder / f"{name}_global.npy", exact.costs())
    np.save(folder / f"{name}_fast.npy", fast.costs())
    np.save(folder / f"{name}_arrival.npy", fast.extras[arrival_key(0)].numpy())
    (folder / f"{name}_window.txt").write_text(str(exact.max_skip))


def cell(target, steps: int, eval_count: int, counter: CallCounter, batched: bool = True,
         matrices: Path | None = None, seeds: int = 1) -> dict:
    budgets = budgets_for(steps, [2, 6])
    window = auto_window(steps, budgets[-1])
    mode = resolve_reuse(target.model, "auto")
    (first,), eval_seeds = prompt_seeds(1, 1, eval_count)
    pos, neg = target.cal_conds[0]
    setup = SamplingSetup(target.model, pos, neg, target.latent, target.sampler, target.scheduler, steps,
                          float(target.cfg))
    runs = calibrations(setup, first, window, mode, counter, batched, seeds)
    if matrices is not None and seeds == 1:  # the replays read one seed's arrival errors
        save_matrices(matrices, f"{target.name}_{steps}", runs)
    row = {"model": target.name, "steps": steps, "max_skip": window, "reuse": mode, "seeds": seeds,
           "cost": {k: {f: v[f] for f in ("evaluations", "model_calls", "seconds")} for k, v in runs.items()},
           "budgets": {}}
    exact, fast = runs["global/1"]["matrix"].costs(), runs["fast/1"]["matrix"].costs()
    row["batched_max_rel_diff"] = {
        name: float(np.nanmax(np.abs(runs[f"{name}/4"]["matrix"].costs() - c)[np.isfinite(c) & (c > 0)]
                              / c[np.isfinite(c) & (c > 0)]))
        for name, c in (("global", exact), ("fast", fast)) if f"{name}/4" in runs}
    for budget in (round(steps / 2), round(steps / 5)):
        a, b = Schedule(steps, best_path(exact, budget)), Schedule(steps, best_path(fast, budget))
        scores = held_out_psnr(target, steps, {"global": a, "fast": b}, mode, eval_seeds)
        row["budgets"][str(budget)] = {"global": str(a), "fast": str(b), "w1": round(w1_steps(a, b), 3),
                                       "psnr_global": scores["global"], "psnr_fast": scores["fast"]}
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Calibration cost: `fast` against exact `global`", "",
             "One calibration prompt and seed, euler / simple, the benchmark's window W and the model's auto "
             "reuse; held-out PSNR on the benchmark's evaluation prompts and seeds. Evaluations are per latent; "
             "model calls count one per batched call. Written by `benchmarks/calibration_cost.py`.", "",
             "| model | N | W | seeds | global: evals / calls / s | global batch 4 | fast | fast batch 4 | fast/global evals |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cost"]
        cells = [f"{c[k]['evaluations']} / {c[k]['model_calls']} / {c[k]['seconds']:.0f}" if k in c else "not run"
                 for k in ("global/1", "global/4", "fast/1", "fast/4")]
        share = c["fast/1"]["evaluations"] / c["global/1"]["evaluations"]
        lines.append(f"| {r['model']} | {r['steps']} | {r['max_skip']} | {r.get('seeds', 1)} | " + " | ".join(cells)
                     + f" | {share:.3f} |")
    lines += ["", "| model | N | K | W1 (steps) | held-out PSNR global | fast | fast - global |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for k, b in r["budgets"].items():
            lines.append(f"| {r['model']} | {r['steps']} | {k} | {b['w1']:.2f} | {b['psnr_global']:.2f} | "
                         f"{b['psnr_fast']:.2f} | {b['psnr_fast'] - b['psnr_global']:+.2f} |")
    batched = [r for r in rows if r["batched_max_rel_diff"]]
    if batched:
        lines += ["", "Batched tails change costs by at most (relative): "
                  + "; ".join(f"{r['model']} N={r['steps']}: global {r['batched_max_rel_diff']['global']:.1e}, "
                              f"fast {r['batched_max_rel_diff']['fast']:.1e}" for r in batched)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(TINY_FAMILIES))
    ap.add_argument("--steps", default="28,50")
    ap.add_argument("--eval", type=int, default=8, help="held-out prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration_cost")
    ap.add_argument("--skip-batched", action="store_true", help="run only tail_batch 1 (the batched runs time batching)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="calibration seeds (the first prompt with seeds s, s+1, ...; the node's default is 2)")
    ap.add_argument("--matrices", type=Path, help="save each cell's matrices here (for fast_cost_ideas.py replays)")
    ap.add_argument("--tiny-weights-dir", type=Path, default=None,
                    help="folder of <family>.safetensors to measure instead of the shipped demo/weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for family in args.models.split(","):
        weights = args.tiny_weights_dir / f"{family}.safetensors" if args.tiny_weights_dir else None
        target = tiny_target(family, 1, args.eval, weights=weights)
        counter = CallCounter(target.model)
        for steps in map(int, args.steps.split(",")):
            rows.append(cell(target, steps, args.eval, counter, not args.skip_batched, args.matrices, args.seeds))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "budgets"}), json.dumps(rows[-1]["budgets"]),
                  flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
            args.out.with_suffix(".md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
