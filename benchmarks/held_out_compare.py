"""Held-out fidelity of given schedules on a trained tiny model: mean PSNR against full compute, per prompt.

For re-measuring a comparison on more held-out prompts than a benchmark used, e.g. the
``calibration_cost.py`` cell where ``fast`` lost to ``global``. Prompts ``--first`` to
``--first + --count - 1`` of the benchmark's held-out list (``benchmarks/targets.py``: never
calibrated on), each with its own seed; the model's ``auto`` reuse unless ``--reuse``.

    .venv/bin/python benchmarks/held_out_compare.py --model flux --schedule global=28:0,1,... \
        --schedule fast=28:0,1,... [--first 8 --count 32]
"""
from __future__ import annotations

from benchmarks.tiny.common import REPO  # noqa: F401  (imports ComfyUI and the pack first)

import argparse
import json

import numpy as np
import torch

from benchmarks.calibration_cost import held_out_psnr
from benchmarks.targets import TINY_FAMILIES, prompt_seeds, tiny_target
from comfyui_otcache.otcache_comfy.cache_runtime import resolve_reuse
from comfyui_otcache.otcache_core.schedule import Schedule


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=TINY_FAMILIES, required=True)
    ap.add_argument("--schedule", action="append", required=True, metavar="NAME=SCHEDULE",
                    help="a name and a schedule string (steps:computed,steps,...); repeat for each")
    ap.add_argument("--first", type=int, default=0, help="first held-out prompt (the benchmarks use 0-7)")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--reuse", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    schedules = {}
    for item in args.schedule:
        name, _, text = item.partition("=")
        schedules[name] = Schedule.parse(text)
    steps = {s.steps for s in schedules.values()}
    if len(steps) != 1:
        raise SystemExit(f"the schedules must have one step count; got {sorted(steps)}")
    target = tiny_target(args.model, 1, args.first + args.count)
    target.eval_conds = target.eval_conds[args.first:]
    _, seeds = prompt_seeds(1, 1, args.first + args.count)
    mode = resolve_reuse(target.model, args.reuse)
    per_prompt = held_out_psnr(target, steps.pop(), schedules, mode, seeds[args.first:], mean=False)
    result = {"model": args.model, "reuse": mode, "prompts": f"{args.first}-{args.first + args.count - 1}",
              "schedules": {k: str(v) for k, v in schedules.items()},
              "mean_psnr": {k: round(float(np.mean(v)), 3) for k, v in per_prompt.items()},
              "per_prompt": {k: [round(x, 3) for x in v] for k, v in per_prompt.items()}}
    names = list(schedules)
    if len(names) == 2:
        diff = np.subtract(per_prompt[names[1]], per_prompt[names[0]])
        result[f"{names[1]}_minus_{names[0]}"] = {
            "mean": round(float(diff.mean()), 3), "std_error": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 3),
            "wins": int((diff > 0).sum()), "prompts": len(diff)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
