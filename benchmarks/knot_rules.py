"""Which knot rule generalises? Budget-path candidates scored on the calibration objective and on held-out prompts.

The budget path (``otcache_core.budget_path``) picks, at each budget K, the best of the OT
interpolation I_K, the graph search's G_K and uniform U_K on the calibration objective,
then climbs to one-step neighbours while they score better. With a few calibration
prompt-seeds, a move can win on calibration and lose held out (measured so: the shipped
default is now no moves, ``neighbour_evals`` 0). This script measures that,
for one tiny model and N: stages 1 and 2 exactly as ``benchmarks/run.py`` (global costs,
reference at the first speedup's budget, anchor at the last), then at each benchmark budget
it scores I_K, G_K, U_K and every one-step neighbour of each, per calibration prompt-seed
and per held-out prompt (PSNR against full compute), and replays the rules:

- ``best3``: the best of I, G, U on the calibration mean, no moves (the shipped default);
- ``climb``: ``best_at_budget`` with ``--neighbour-evals`` new schedules (default 4, the
  node's default before this measurement);
- ``majority``: as ``climb``, but a move must also win on more than half the calibration samples;
- ``unanimous``: as ``climb``, but a move must win on every calibration sample;
- ``graph-first``: the graph solution G_K unless I_K or U_K wins on every calibration sample,
  then ``unanimous`` moves (the graph search is the baseline the path must not lose to);
- ``graph-clear``: no moves; G_K unless I_K or U_K beats it clearly, by more than one
  standard error of the paired per-sample differences (the anchor at its own budget, where
  stage 2 already measured G_K and U_K);
- ``best-all``: the best of all scored candidates on the calibration mean;
- ``oracle``: the best held out (no rule can know it: the ceiling).

Each rule's held-out PSNR is reported with its margin over the better of G_K and U_K.
``--skip-eval-prompts M`` scores the rules on the evaluation prompts after the first M only:
with ``--eval-prompts 16 --skip-eval-prompts 8`` the rules are compared on 8 *validation*
prompts, never on the benchmark's own 8 held-out ones (choosing a rule on those would tune
the method on its test set). Stage 1 reads ``--stage1-cache`` as the benchmark does.
Takes the benchmark's arguments (first model and first N only):

    .venv/bin/python benchmarks/knot_rules.py --models flux --steps 28 --cal-prompts 2 --cal-seeds 2 \\
        --eval-prompts 8 --anchor-metric psnr --out benchmarks/results/knot_rules_flux_28
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.run import (
    TransformerCalls,
    anchor_metric_for,
    load_metric,
    make_cell,
    make_targets,
    parse_args,
    psnr,
    say,
    stage1_reference,
    stage2_anchor,
)
from comfyui_otcache.otcache_core.budget_path import _Scores, best_at_budget, lower_beyond_noise, neighbours
from comfyui_otcache.otcache_core.interpolate import interpolate
from comfyui_otcache.otcache_core.schedule import Schedule


class Measured:
    """Per-sample calibration scores and held-out PSNRs of schedules, each measured once."""

    def __init__(self, cell, objectives, skip: int = 0):
        self.cell, self.objectives = cell, objectives
        self.cal: dict[str, list[float]] = {}
        self.held: dict[str, list[float]] = {}
        self.setups = cell.eval_setups[skip:]
        self.full = [(setup.sample(seed, None).final, seed) for setup, seed in zip(self.setups, cell.eval_seeds[skip:])]

    def calibration(self, schedule: Schedule) -> list[float]:
        key = str(schedule)
        if key not in self.cal:
            self.cal[key] = [float(o.metric(got, want).mean()) for o in self.objectives for seed in o.seeds
                             for got, want in zip(o.images(seed, schedule), o.references[seed])]
        return self.cal[key]

    def heldout(self, schedule: Schedule) -> list[float]:
        key = str(schedule)
        if key not in self.held:
            frames = self.cell.target.frames
            self.held[key] = [psnr(frames(setup.sample(seed, schedule, self.cell.mode).final), frames(full))
                              for setup, (full, seed) in zip(self.setups, self.full)]
        return self.held[key]


def wins(other: np.ndarray, base: np.ndarray, share: float) -> bool:
    """``other`` lowers the calibration mean and is lower on more than ``share`` of the samples (1: on all)."""
    lower = int((other < base).sum())
    return other.mean() < base.mean() and (lower == len(base) if share >= 1 else lower > share * len(base))


def guarded_climb(measured: Measured, start: Schedule, evals: int, share: float) -> Schedule:
    """First-improvement moves that lower the calibration mean *and* win on more than ``share`` of the samples."""
    best, spent = start, 0
    while spent < evals:
        base = np.asarray(measured.calibration(best))
        step = None
        for near in neighbours(best):
            if spent >= evals:
                break
            spent += str(near) not in measured.cal
            other = np.asarray(measured.calibration(near))
            if wins(other, base, share):
                step = near
                break
        if step is None:
            return best
        best = step
    return best


def graph_first(measured: Measured, candidates: dict[str, Schedule]) -> Schedule:
    """G_K, unless another candidate beats it on every calibration sample (then the best of those)."""
    graph = candidates["graph"]
    base = np.asarray(measured.calibration(graph))
    better = [s for s in candidates.values() if wins(np.asarray(measured.calibration(s)), base, 1.0)]
    return min(better, key=lambda s: float(np.mean(measured.calibration(s)))) if better else graph


def clear_win(other: np.ndarray, base: np.ndarray) -> bool:
    """``other`` lowers the calibration mean by more than one standard error of the paired differences."""
    if len(other) < 2:
        return float(other.mean()) < float(base.mean())
    return lower_beyond_noise(list(other), list(base))


def graph_clear(measured: Measured, candidates: dict[str, Schedule]) -> Schedule:
    """The anchor at its budget; elsewhere G_K unless a candidate clearly beats it (then the best of those)."""
    if "anchor" in candidates:
        return candidates["anchor"]
    graph = candidates["graph"]
    base = np.asarray(measured.calibration(graph))
    better = [s for s in candidates.values() if clear_win(np.asarray(measured.calibration(s)), base)]
    return min(better, key=lambda s: float(np.mean(measured.calibration(s)))) if better else graph


def rules_at(measured: Measured, candidates: dict[str, Schedule], evals: int) -> dict[str, Schedule]:
    scores = _Scores(lambda s: float(np.mean(measured.calibration(s))))
    start = min(candidates.values(), key=lambda s: scores(s))
    pool = {str(s): s for c in candidates.values() for s in [c, *neighbours(c)]}
    for s in pool.values():
        scores(s)
    chosen = {
        "best3": start,
        "climb": best_at_budget(scores, list(candidates.items()), evals).schedule,
        "majority": guarded_climb(measured, start, evals, 0.5),
        "unanimous": guarded_climb(measured, start, evals, 1.0),
        "graph-first": guarded_climb(measured, graph_first(measured, candidates), evals, 1.0),
        "graph-clear": graph_clear(measured, candidates),
        "best-all": min(pool.values(), key=lambda s: scores(s)),
    }
    everything = [*pool.values(), *chosen.values()]
    return {**chosen, "oracle": max(everything, key=lambda s: float(np.mean(measured.heldout(s))))}


def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--skip-eval-prompts", type=int, default=0)
    own.add_argument("--neighbour-evals", type=int, default=4)  # the climb's allowance, not the benchmark's 0
    mine, rest = own.parse_known_args(sys.argv[1:] if argv is None else argv)
    args = parse_args(rest)
    if not 0 <= mine.skip_eval_prompts < args.eval_prompts:
        print(f"error: --skip-eval-prompts {mine.skip_eval_prompts} leaves no evaluation prompt of "
              f"--eval-prompts {args.eval_prompts}; raise --eval-prompts", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lpips_metric = load_metric("lpips")
    anchor_metric = anchor_metric_for(args.anchor_metric, lpips_metric)
    target = make_targets(args, args.cal_prompts, args.eval_prompts)[0]()
    cell = make_cell(target, args.steps[0], args, TransformerCalls(target.model))
    matrices, costs, reference = stage1_reference(cell)
    objectives, graph, anchor, _ = stage2_anchor(cell, matrices, costs, reference, anchor_metric)
    measured = Measured(cell, objectives, mine.skip_eval_prompts)
    n, rows = cell.steps, []
    for k in cell.budgets[1:]:
        own = ("anchor", anchor) if k == anchor.budget else ("interpolated", interpolate(reference, anchor, k))
        candidates = {own[0]: own[1], "graph": graph[k], "uniform": Schedule.uniform(n, k)}
        chosen = rules_at(measured, candidates, mine.neighbour_evals)
        base = max(float(np.mean(measured.heldout(s))) for s in (graph[k], Schedule.uniform(n, k)))
        row = {"budget": k, "speedup": n / k, "baseline_psnr": base, "candidates_scored": len(measured.cal),
               "candidates": {name: str(s) for name, s in candidates.items()},
               "rules": {name: {"schedule": str(s), "psnr": float(np.mean(measured.heldout(s))),
                                "margin": float(np.mean(measured.heldout(s))) - base,
                                "calibration": float(np.mean(measured.calibration(s)))} for name, s in chosen.items()}}
        # Every scored candidate, per sample, so a new rule can be replayed without sampling again.
        row["scored"] = {key: {"calibration": measured.cal[key], "heldout": measured.held.get(key)}
                         for key in measured.cal if Schedule.parse(key).budget == k}
        rows.append(row)
        say(f"K={k}: " + ", ".join(f"{name} {r['margin']:+.2f}" for name, r in row["rules"].items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "knot_rules.json").write_text(json.dumps({"model": target.name, "steps": n, "info": target.info,
                                                     "reference": str(reference), "anchor": str(anchor),
                                                     "anchor_metric": anchor_metric.name, "rows": rows}, indent=1))
    lines = ["| K | N/K | best of graph, uniform (dB) | " + " | ".join(rows[0]["rules"]) + " |",
             "|---|---|---|" + "---|" * len(rows[0]["rules"])]
    for r in rows:
        lines.append(f"| {r['budget']} | {r['speedup']:.2f} | {r['baseline_psnr']:.2f} | "
                     + " | ".join(f"{v['margin']:+.2f}" for v in r["rules"].values()) + " |")
    (out / "knot_rules.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
