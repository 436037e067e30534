"""Do the tiny models behave like real ones where caching is concerned? Read off a benchmark run.

For every (model, N) cell of a ``benchmarks/run.py`` result (``comparison.json``):

1. The model's own reference at budget ``K = round(N / 5)``: the minimax path
   (``otcache_core.graph.best_path``) on the cell's mean *global* edge-cost matrix, the
   same matrix the benchmark's stage 1 measured. Its W1 distance to the published
   real-model schedule of the family at that budget (LeMiCa, budget 10 of 50, resampled
   to N), against the uniform schedule's:
   ``(N - 1) * integral_0^1 |Q_a(u) - Q_b(u)| du`` in steps, between quantile functions
   (``otcache_core.warp.warp``).
2. The published schedule against uniform, per held-out prompt (PSNR against full
   compute, as measured by the benchmark): the margin and how many prompts it wins.
   Uniform at the published budget where the benchmark measured it, else uniform at the
   nearest *larger* target budget (more computation for uniform: a harder comparison
   for the published schedule), said in the output.

No sampling: everything comes from the benchmark's JSON.

    .venv/bin/python benchmarks/tiny/acceptance.py [benchmarks/results/comparison.json] [--out acceptance.md]
"""
from __future__ import annotations

from benchmarks.tiny.common import HERE

import argparse
import json
import math
from pathlib import Path

import numpy as np  # noqa: E402

from comfyui_otcache.otcache_core.atomic import write_atomic  # noqa: E402
from comfyui_otcache.otcache_core.graph import best_path  # noqa: E402
from comfyui_otcache.otcache_core.presets import load_preset  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import resample, w1_steps  # noqa: E402

PUBLISHED = {"flux": "lemica-flux1-dev-50-10", "qwen_image": "lemica-qwen-image-50-10",
             "hunyuan_video": "lemica-hunyuanvideo-1.5-50-10",
             "wan21": "lemica-wan2.1-t2v-1.3b-50-14"}  # LeMiCa's smallest Wan budget is 14 of 50


def _per_prompt_psnr(cell: dict, row: dict) -> list[float]:
    return [r["psnr"] for r in row["per_prompt"]]


def check_cell(cell: dict) -> dict:
    n, family = cell["steps"], cell["family"]
    costs = np.array([[math.inf if c is None else c for c in row] for row in cell["schedules"]["edge_costs_mean"]])
    published = resample(load_preset(PUBLISHED[family]), n)
    k = published.budget
    reference = Schedule(n, best_path(costs, k, "minimax"))
    uniform = Schedule.uniform(n, k)
    out = {"model": cell["model"], "steps": n, "budget": k, "published": str(published),
           "reference": str(reference), "uniform": str(uniform),
           "w1_reference_published": w1_steps(reference, published),
           "w1_uniform_published": w1_steps(uniform, published)}
    rows = cell["rows"]
    pub = next((r for r in rows if r["method"] == "LeMiCa (published)" and r["schedule"] == str(published)), None)
    uniform_rows = sorted((r for r in rows if r["method"] == "uniform" and r["budget"] >= k), key=lambda r: r["budget"])
    if pub is not None and uniform_rows:
        uni = uniform_rows[0]
        margins = [a - b for a, b in zip(_per_prompt_psnr(cell, pub), _per_prompt_psnr(cell, uni))]
        out.update({"uniform_budget_compared": uni["budget"], "psnr_published": pub["psnr"], "psnr_uniform": uni["psnr"],
                    "margin_db_mean": float(np.mean(margins)), "margin_db_min": float(np.min(margins)),
                    "published_wins": int(sum(m > 0 for m in margins)), "prompts": len(margins)})
    return out


def markdown(checks: list[dict], source: str) -> str:
    lines = ["# Tiny models against the published real-model schedules", "",
             f"From `{source}` by `benchmarks/tiny/acceptance.py` (no sampling of its own). Budget K = N/5; "
             "published = LeMiCa budget 10 of 50 for the family, resampled to N; W1 in steps between quantile "
             "functions; PSNR against full compute on the benchmark's held-out prompts (reuse mode of the run).", "",
             "| model | N | K | W1 own reference -> published | W1 uniform -> published | published PSNR | "
             "uniform PSNR (its K) | margin dB (mean / min) | published wins |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        if "margin_db_mean" in c:
            tail = (f"{c['psnr_published']:.2f} | {c['psnr_uniform']:.2f} ({c['uniform_budget_compared']}) | "
                    f"{c['margin_db_mean']:+.2f} / {c['margin_db_min']:+.2f} | {c['published_wins']}/{c['prompts']}")
        else:
            tail = "n/a | n/a | n/a | n/a"
        lines.append(f"| {c['model']} | {c['steps']} | {c['budget']} | {c['w1_reference_published']:.2f} | "
                     f"{c['w1_uniform_published']:.2f} | {tail} |")
    lines += ["", "Schedules (computed steps):", ""]
    for c in checks:
        lines.append(f"- {c['model']} N={c['steps']}: own reference `{c['reference']}`, published `{c['published']}`, "
                     f"uniform `{c['uniform']}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", nargs="?", type=Path, default=HERE.parent / "results" / "comparison.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "acceptance.md")
    args = ap.parse_args()
    result = json.loads(args.result.read_text())
    checks = [check_cell(cell) for cell in result["cells"] if cell["family"] in PUBLISHED]
    text = markdown(checks, str(args.result.relative_to(HERE.parent.parent)) if args.result.is_absolute()
                    and HERE.parent.parent in args.result.parents else str(args.result))
    write_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
