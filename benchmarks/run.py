"""Side-by-side quality benchmark: OTCache against the direct graph search, uniform schedules,
ComfyUI's EasyCache and the published LeMiCa schedules, on held-out prompts and seeds.

For each model and step count N, at the target speedups (default 2, 3, 4.5, 6; budget
``K = round(N / speedup)``):

- **OTCache**: stage 1 reference (global edge costs, ``otcache_comfy.calibration.calibrate``, on the
  calibration prompts; minimax ``best_path`` at the smallest speedup's budget), stage 2 anchor
  (``otcache_core.anchor.search``, Optuna TPE with a fixed seed, in memory, scored end to end
  by ``nodes.anchor_search.Objective``: LPIPS, or the stated 1 - SSIM fallback, against full
  compute) at the largest speedup's budget, stage 3 ``interpolate`` for the budgets between;
- **graph search (direct)**: ``best_path`` on the same cost matrix at each target budget
  (the LeMiCa way, which OTCache claims to beat at low budgets);
- **uniform** schedules (``Schedule.uniform``);
- **EasyCache**: ComfyUI's own ``EasyCacheNode`` on a clone of the model, its
  ``reuse_threshold`` bisected on the calibration prompts until its mean computed steps
  match the budget; guarded from its in-place write (see :func:`copy_input_wrapper`);
- **LeMiCa (published)**: the family's published schedules resampled to N, as points at
  their own speedups.

Schedules run through the pack's Cached Model runtime (``apply_otcache``) in the reuse mode
of ``--reuse``. Every sampling goes through ComfyUI's own path (``SamplingSetup.sample``:
``comfy.sample.sample_custom``, the KSampler's sigmas and noise). NFE is counted, not
assumed: a forward pre-hook on the first block of the transformer's block stack counts the
runs of the transformer (on skipped steps ``block`` mode still runs the embeddings and the
final layer, but not the blocks).

Metrics against full compute of the same prompt and seed: PSNR and SSIM on decoded pixels,
LPIPS (AlexNet; "n/a" with the reason when its weights cannot be loaded), relative L2 of the
final latent. Wall time: see ``TIMING`` below.

Tiny models (``benchmarks/tiny``; weights must exist, or ``--random-weights`` for a smoke run):

    .venv/bin/python benchmarks/run.py                 # the committed run (see benchmarks/README.md)
    .venv/bin/python benchmarks/run.py --quick --random-weights --out /tmp/bench

Stage 1 (most of the time) can be kept and read back by reruns, e.g. after changing stage 3:

    .venv/bin/python benchmarks/run.py --steps 50 --stage1-cache /tmp/stage1 [--stage1-only]

Runs split over several invocations (e.g. one model at a time) are put into one table with

    .venv/bin/python benchmarks/run.py --combine run1/comparison.json run2/comparison.json [--out DIR]

Real checkpoints (a GPU; files as ComfyUI loads them):

    .venv/bin/python benchmarks/run.py --diffusion-model flux1-dev.safetensors \\
        --text-encoder clip_l.safetensors --text-encoder t5xxl_fp16.safetensors --clip-type flux \\
        --vae ae.safetensors --prompts prompts.txt --width 1024 --height 1024
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from devtools.host import import_comfy, import_pack  # noqa: E402

import_comfy()
import_pack()

import comfy.model_management  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from comfy_extras.nodes_easycache import EasyCacheNode  # noqa: E402

from benchmarks.targets import TINY_FAMILIES, BenchError, BenchTarget, make_targets, prompt_seeds  # noqa: E402
from comfyui_otcache.otcache_comfy.anchor_run import Objective, decode_frames  # noqa: E402
from comfyui_otcache.otcache_comfy.cache_runtime import resolve_reuse  # noqa: E402
from comfyui_otcache.otcache_comfy.calibration import SamplingSetup, calibrate, calibration_key, load_or_new  # noqa: E402
from comfyui_otcache.otcache_comfy.saved_results import costs_to_json  # noqa: E402
from comfyui_otcache.otcache_core import anchor as anchor_search  # noqa: E402
from comfyui_otcache.otcache_core.atomic import write_atomic  # noqa: E402
from comfyui_otcache.otcache_core.budget_path import build_path, path_schedule  # noqa: E402
from comfyui_otcache.otcache_core.edge_costs import CostMatrix, edge_evaluations, error, window_costs, window_edges  # noqa: E402
from comfyui_otcache.otcache_core.graph import (  # noqa: E402
    GraphSearchError,
    all_graph_solutions,  # noqa: E402
    best_path,
)
from comfyui_otcache.otcache_core.interpolate import budget_for_speedup, interpolate  # noqa: E402
from comfyui_otcache.otcache_core.metrics import PSNR_CAP, psnr, ssim  # noqa: E402,F401
from comfyui_otcache.otcache_core.perceptual import METRIC_CHOICES, load_metric, subsample_frames  # noqa: E402
from comfyui_otcache.otcache_core.presets import list_presets  # noqa: E402
from comfyui_otcache.otcache_core.schedule import Schedule  # noqa: E402
from comfyui_otcache.otcache_core.warp import resample  # noqa: E402

FORMAT = "otcache.benchmark.comparison"
VERSION = 1
LPIPS_MAX_FRAMES = 8  # frames of a video compared by LPIPS (evenly spaced), as the anchor search
EASYCACHE_MAX_THRESHOLD = 3.0  # the EasyCache node's own maximum reuse_threshold
EASYCACHE_START_LADDER = (0.10, 0.05, 0.0)  # tried after --easycache-start when a budget is out of reach
GUARD_KEY = "otcache_benchmark_copy_input"
TIMING = ("per evaluation prompt, full compute runs first and again last, every method in between "
          "(interleaved); each run repeated --repeats times, median taken; wall speedup = sum over prompts of "
          "full-compute time (mean of the two) / sum of the method's time; sampling only (no decoding)")

METHODS = ("full compute", "OTCache", "OT interpolation (paper)", "graph search (direct)", "uniform", "EasyCache",
           "LeMiCa (published)")
BASELINES = ("graph search (direct)", "uniform", "EasyCache")  # what OTCache must beat in every cell

PROFILES: dict[str, dict[str, Any]] = {
    # The committed comparison (hours on 2 CPU cores for the three tiny models at both N: stage 1
    # dominates; the script prints its own estimate at start). 2 prompts x 2 seeds calibrate, as
    # the tiny-models issue asks.
    "full": {"models": "flux,qwen_image,hunyuan_video", "steps": "50,28", "speedups": "2,3,4.5,6",
             "cal_prompts": 2, "cal_seeds": 2, "eval_prompts": 8, "trials": 30, "easycache_iters": 8,
             "repeats": 1, "tiny_latent": None},
    # A smoke run of the whole path (tests/test_benchmark_run.py): one model, N = 10, three speedups.
    "quick": {"models": "flux", "steps": "10", "speedups": "2,2.5,3.3", "cal_prompts": 1, "cal_seeds": 1,
              "eval_prompts": 1, "trials": 4, "easycache_iters": 5, "repeats": 1, "tiny_latent": 8},
}


def say(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------- counting and guarding


def first_block(diffusion_model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The first block of the DiT's block stack (what runs only when the transformer really runs)."""
    for name in ("double_blocks", "transformer_blocks", "blocks", "joint_blocks", "layers"):
        blocks = getattr(diffusion_model, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0:
            return blocks[0], f"{type(diffusion_model).__name__}.{name}[0]"
    return diffusion_model, type(diffusion_model).__name__


class TransformerCalls:
    """Counts transformer runs with a forward pre-hook on the first block of the block stack.

    Shared by every clone of the model (the hook is on the module). One sampling run at cfg 1
    counts one per computed step; a batched cond+uncond call counts once.
    """

    def __init__(self, model) -> None:
        self.module, self.where = first_block(model.get_model_object("diffusion_model"))
        self.count = 0
        self._handle = self.module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


def copy_input_wrapper(executor, *args, **kwargs):
    """Outer DIFFUSION_MODEL wrapper: hand the model (and EasyCache inside it) a copy of its input.

    EasyCache adds its cached difference into the model input in place (``x[...] += diff``).
    In float32 that input is the sampler's own latent (``xc.to(dtype)`` is a no-op), so the
    denoised value ``x - sigma * v`` would be computed from a corrupted x. In bf16 the cast
    makes a copy and nothing is corrupted; this wrapper gives every dtype the bf16 behaviour.
    """
    if args and isinstance(args[0], torch.Tensor):
        args = (args[0].clone(), *args[1:])
    return executor(*args, **kwargs)


def easycache_model(model, threshold: float, start: float, end: float):
    """ComfyUI's EasyCache node applied to a guarded clone of ``model`` (the guard is the outer wrapper)."""
    guarded = model.clone()
    guarded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, GUARD_KEY, copy_input_wrapper)
    return EasyCacheNode.execute(guarded, float(threshold), float(start), float(end), False).result[0]


# ----------------------------------------------------------------- one measured sampling run


@dataclasses.dataclass
class Run:
    final: torch.Tensor  # the KSampler's latent
    nfe: int  # transformer runs, counted
    seconds: float  # sampling wall time
    scheduled: int  # evaluations the schedule asked to compute (the sampler wrapper's count)


def sample(setup: SamplingSetup, counter: TransformerCalls, seed: int, schedule: Schedule | None = None,
           reuse: str = "auto", model=None) -> Run:
    if model is not None:
        setup = dataclasses.replace(setup, model=model)
    counter.count = 0
    result = setup.sample(seed, schedule, reuse)
    return Run(result.final.detach().to("cpu", torch.float32), counter.count, result.seconds, result.evaluations)


def sample_timed(repeats: int, *args, **kwargs) -> Run:
    """``repeats`` runs (deterministic: the latents agree); the median wall time."""
    runs = [sample(*args, **kwargs) for _ in range(max(1, repeats))]
    for other in runs[1:]:
        if not torch.equal(other.final, runs[0].final) or other.nfe != runs[0].nfe:
            raise RuntimeError("a repeated sampling run gave another result: the run is not deterministic")
    return dataclasses.replace(runs[0], seconds=statistics.median(r.seconds for r in runs))


# ----------------------------------------------------------------- metrics


def fidelity(final, frames, full_final, full_frames, lpips_metric) -> dict[str, float | None]:
    out = {"psnr": psnr(frames, full_frames), "ssim": float(ssim(frames, full_frames).mean()),
           "lpips": None, "rel_l2": float(error(final, full_final))}
    if lpips_metric is not None:
        a = subsample_frames(frames, LPIPS_MAX_FRAMES)
        b = subsample_frames(full_frames, LPIPS_MAX_FRAMES)
        out["lpips"] = float(lpips_metric(a, b).mean())
    return out


# ----------------------------------------------------------------- EasyCache threshold bisection


@dataclasses.dataclass
class EasyCacheSetting:
    budget: int
    start: float
    end: float
    threshold: float
    cal_nfe: float  # mean computed steps on the calibration prompts
    reached: bool  # |cal_nfe - budget| <= 1
    note: str = ""


class EasyCacheTuner:
    """Bisects EasyCache's ``reuse_threshold`` on the calibration prompt-seeds for each budget.

    The mean computed steps fall as the threshold grows. EasyCache always computes the steps
    before ``start_percent`` and after ``end_percent``; when the budget is out of reach at the
    node's largest threshold (3.0), ``start_percent`` is lowered along 0.10, 0.05, 0.0 (as a
    user chasing that speed would) and the setting says so.
    """

    def __init__(self, target: BenchTarget, setups: list[SamplingSetup], seeds: list[list[int]],
                 counter: TransformerCalls, start: float, end: float, iterations: int) -> None:
        self.target, self.setups, self.seeds, self.counter = target, setups, seeds, counter
        self.start, self.end, self.iterations = start, end, iterations
        self.measured: dict[tuple[float, float], float] = {}
        self.runs = self.evaluations = 0
        self.seconds = 0.0

    def mean_nfe(self, start: float, threshold: float) -> float:
        key = (start, threshold)
        if key not in self.measured:
            model = easycache_model(self.target.model, threshold, start, self.end)
            nfes = []
            begin = time.perf_counter()
            for setup, seeds in zip(self.setups, self.seeds):
                for seed in seeds:
                    run = sample(setup, self.counter, seed, model=model)
                    nfes.append(run.nfe)
                    self.runs += 1
                    self.evaluations += run.nfe
            self.seconds += time.perf_counter() - begin
            self.measured[key] = float(np.mean(nfes))
        return self.measured[key]

    def tune(self, budget: int) -> EasyCacheSetting:
        ladder = [self.start] + [s for s in EASYCACHE_START_LADDER if s < self.start]
        top = EASYCACHE_MAX_THRESHOLD
        start = ladder[-1]
        for candidate in ladder:
            if self.mean_nfe(candidate, top) <= budget:
                start = candidate
                break
        else:
            nfe = self.mean_nfe(start, top)
            return EasyCacheSetting(budget, start, self.end, top, nfe, abs(nfe - budget) <= 1,
                                    f"budget not reached: {nfe:g} computed steps on the calibration prompts at "
                                    f"the node's largest threshold {top:g} and start_percent {start:g}")
        note = "" if start == self.start else f"start_percent lowered to {start:g} to reach the budget"
        # Bisection for the smallest threshold whose mean computed steps reach the budget:
        # threshold 0 never skips (N > budget), the top reaches it.
        lo, hi = 0.0, top
        candidates = [(top, self.mean_nfe(start, top))]
        for _ in range(self.iterations):
            mid = (lo + hi) / 2
            nfe = self.mean_nfe(start, mid)
            candidates.append((mid, nfe))
            if nfe > budget:
                lo = mid
            else:
                hi = mid
        # Closest mean to the budget; on a tie the one that does not exceed it, then the smaller threshold.
        threshold, nfe = min(candidates, key=lambda c: (abs(c[1] - budget), c[1] > budget, c[0]))
        reached = abs(nfe - budget) <= 1
        if not reached:
            note = (note + "; " if note else "") + f"closest mean on the calibration prompts: {nfe:g} computed steps"
        return EasyCacheSetting(budget, start, self.end, threshold, nfe, reached, note)


# ----------------------------------------------------------------- the points to evaluate


@dataclasses.dataclass
class Point:
    method: str
    label: str
    budget: int | None  # None for EasyCache (its NFE is measured) and full compute
    target_speedup: float | None
    schedule: Schedule | None = None
    easycache: EasyCacheSetting | None = None
    note: str = ""
    per_prompt: list[dict] = dataclasses.field(default_factory=list)

    def key(self) -> str:
        if self.schedule is not None:
            return f"schedule {self.schedule}"
        if self.easycache is not None:
            e = self.easycache
            return f"easycache {e.threshold!r} {e.start!r} {e.end!r}"
        return "full"


def auto_window(steps: int, smallest_budget: int) -> int:
    """W: the window that lets the lowest budget through, plus 1 so it still has a choice of paths.

    A path of K nodes over N steps needs a segment of at least (N-1)/(K-1) steps; with exactly
    that window the lowest budget's path is (nearly) forced to uniform spacing.
    """
    need = -(-(steps - 1) // (smallest_budget - 1))
    return min(steps - 1, need + 1)


def budgets_for(steps: int, speedups: list[float]) -> list[int]:
    budgets = [budget_for_speedup(steps, s) for s in speedups]
    if len(set(budgets)) != len(budgets) or budgets != sorted(budgets, reverse=True):
        raise BenchError(f"speedups {speedups} give budgets {budgets} at N={steps}: they must be distinct and "
                         "decreasing (give the speedups in increasing order, far enough apart for this N)")
    if budgets[-1] < 2 or budgets[0] > steps:
        raise BenchError(f"budgets {budgets} out of range for N={steps}")
    return budgets


def published_schedules(target: BenchTarget, steps: int) -> list[tuple[str, Schedule]]:
    """The family's published LeMiCa schedules resampled to ``steps``, distinct, most computed steps first."""
    try:
        presets = [p for p in list_presets(target.preset_family) if p.name.startswith("lemica-")]
    except Exception:  # no presets for this family
        return []
    out: list[tuple[str, Schedule]] = []
    for preset in presets:
        schedule = resample(preset.schedule, steps)
        if all(schedule != other for _, other in out):
            out.append((preset.name, schedule))
    return out


# ----------------------------------------------------------------- one model at one step count


def progress_printer(prefix: str, every: float = 20.0) -> Callable[[int, int], None]:
    last = [time.perf_counter(), -1]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if (now - last[0] >= every or done >= total) and done != last[1]:
            last[0], last[1] = now, done
            say(f"{prefix}: {done}/{total} evaluations")

    return progress


@dataclasses.dataclass
class Cell:
    """One (model, N) cell of the benchmark: what every stage needs."""

    target: BenchTarget
    steps: int
    args: Any
    counter: TransformerCalls
    tag: str
    budgets: list[int]
    window: int
    mode: str
    cal_first: list[int]
    cal_seeds: list[list[int]]
    eval_seeds: list[int]
    cal_setups: list[SamplingSetup]
    eval_setups: list[SamplingSetup]
    costs_table: list[dict] = dataclasses.field(default_factory=list)


def make_cell(target: BenchTarget, steps: int, args, counter: TransformerCalls) -> Cell:
    tag = f"[{target.name} N={steps}]"
    budgets = budgets_for(steps, args.speedups)
    window = args.max_skip or auto_window(steps, budgets[-1])
    try:
        best_path(window_costs(steps, window), budgets[-1])
    except GraphSearchError as exc:
        raise BenchError(f"{tag} --max-skip {window} cannot reach budget {budgets[-1]}: {exc}") from None
    cal_first, eval_seeds = prompt_seeds(len(target.cal_conds), args.cal_seeds, len(target.eval_conds))

    def setup_for(pos, neg) -> SamplingSetup:
        return SamplingSetup(target.model, pos, neg, target.latent, target.sampler, target.scheduler, steps,
                             float(target.cfg))

    return Cell(target, steps, args, counter, tag, budgets, window, resolve_reuse(target.model, args.reuse),
                cal_first, [[first + s for s in range(args.cal_seeds)] for first in cal_first], eval_seeds,
                [setup_for(*c) for c in target.cal_conds], [setup_for(*c) for c in target.eval_conds])


def run_cell(target: BenchTarget, steps: int, args, counter: TransformerCalls, lpips_metric,
             anchor_metric) -> dict | None:
    """Stages 1-3 of OTCache and the baselines on the calibration prompts, then everything on the held-out ones."""
    cell = make_cell(target, steps, args, counter)
    matrices, costs, reference = stage1_reference(cell)
    if args.stage1_only:
        return None
    objectives, graph, anchor, study = stage2_anchor(cell, matrices, costs, reference, anchor_metric)
    path, otcache, plain_ot, direct = stage3_path(cell, objectives, graph, reference, anchor, study,
                                                  anchor_metric)
    easy = tune_easycache(cell)
    points = cell_points(cell, path, otcache, plain_ot, direct, easy)
    full_seconds = evaluate_points(cell, points, lpips_metric)
    rows = result_rows(cell, points, full_seconds)
    say(f"{cell.tag} done")
    return cell_result(cell, reference, anchor, otcache, plain_ot, path, direct, costs, rows)


def stage1_reference(cell: Cell):
    """Global edge costs on the calibration prompts (mean matrix), minimax reference at the 2x budget."""
    tag, target, steps, args, window, mode = cell.tag, cell.target, cell.steps, cell.args, cell.window, cell.mode
    cal_setups, cal_first, costs_table, k_ref = cell.cal_setups, cell.cal_first, cell.costs_table, cell.budgets[0]
    say(f"{tag} stage 1: global edge costs, W={window}, {len(cal_setups)} prompt(s) x {args.cal_seeds} seed(s), "
        f"reuse {mode}")
    matrices, runs, evaluations, seconds = [], 0, 0, 0.0
    for p, setup in enumerate(cal_setups):
        path = stage1_file(cell, p)
        matrix = (CostMatrix.new(steps, window, args.cal_seeds, "global") if path is None
                  else load_or_new(path, steps, window, args.cal_seeds, "global")[0])
        stats = calibrate(setup, cal_first[p], matrix, mode, path=path,
                          progress=progress_printer(f"{tag} stage 1 prompt {p + 1}/{len(cal_setups)}"))
        matrices.append(matrix)
        # The calibration's whole cost, also when (part of) it was read back from --stage1-cache.
        info = matrix.info
        runs, evaluations, seconds = runs + info["runs"], evaluations + info["evaluations"], seconds + info["seconds"]
        cached = f" ({info['evaluations'] - stats.evaluations} read back from {path.parent})" if path else ""
        say(f"{tag} stage 1 prompt {p + 1}: {info['evaluations']} evaluations{cached} in {info['runs']} runs, "
            f"{info['seconds']:.1f} s")
    costs = np.mean([m.costs() for m in matrices], axis=0)
    begin = time.perf_counter()
    reference = Schedule(steps, best_path(costs, k_ref, "minimax"), model=target.family, sampler=target.sampler,
                         scheduler=target.scheduler, source="reference",
                         params={"edge_cost": "global", "objective": "minimax", "max_skip": window, "reuse": mode})
    solve = time.perf_counter() - begin
    costs_table.append({"stage": "1 reference: global edge costs (calibrate)",
                        "detail": f"{len(cal_setups)} prompt(s) x {args.cal_seeds} seed(s), W={window}",
                        "runs": runs, "evaluations": evaluations, "seconds": seconds})
    costs_table.append({"stage": f"1 reference: graph search (minimax, K={k_ref})", "detail": "",
                        "runs": 0, "evaluations": 0, "seconds": solve})
    say(f"{tag} reference K={k_ref}: {reference}")

    return matrices, costs, reference


def stage1_file(cell: Cell, prompt: int) -> Path | None:
    """Where ``--stage1-cache`` keeps calibration prompt ``prompt``'s matrix (resumable; keyed by what it measures)."""
    if cell.args.stage1_cache is None:
        return None
    key = calibration_key(cell.cal_setups[prompt], cell.cal_first[prompt], cell.args.cal_seeds, "global", cell.window,
                          cell.mode)
    return cell.args.stage1_cache / f"{cell.target.name}_N{cell.steps}_t{cell.args.threads}_{key}.safetensors"


def stage2_anchor(cell: Cell, matrices, costs, reference: Schedule, anchor_metric):
    """The anchor at the 6x budget, scored end to end against full compute (decoded)."""
    tag, target, steps, args, mode = cell.tag, cell.target, cell.steps, cell.args, cell.mode
    cal_setups, cal_seeds, costs_table, k_anchor = cell.cal_setups, cell.cal_seeds, cell.costs_table, cell.budgets[-1]
    objectives = []
    for p, setup in enumerate(cal_setups):
        refs = {seed: decode_frames(target.decoder, matrices[p].extras[f"final_{s}"])
                for s, seed in enumerate(cal_seeds[p])}
        objectives.append(Objective(setup, target.decoder, cal_seeds[p], mode, anchor_metric, refs))

    def objective(schedule: Schedule) -> float:
        return float(np.mean([o(schedule) for o in objectives]))

    graph = all_graph_solutions(costs, "minimax")
    say(f"{tag} stage 2: anchor search K={k_anchor}, {args.trials} trials, metric {anchor_metric.name}")
    begin = time.perf_counter()
    anchor, study = anchor_search.search(objective, steps, k_anchor, reference=reference, trials=args.trials,
                                         seed=args.seed, storage=None, knots=args.knots,
                                         extra_seeds=[("graph", graph[k_anchor])])
    anchor_seconds = time.perf_counter() - begin
    costs_table.append({
        "stage": f"2 anchor: Optuna TPE search (K={k_anchor})",
        "detail": f"{anchor.metrics['trials']} trials, {anchor.metrics['objective_calls']} distinct schedules "
                  f"scored, metric {anchor_metric.name}; full-compute images decoded from stage 1's runs",
        "runs": sum(o.sampling_runs for o in objectives), "evaluations": sum(o.evaluations for o in objectives),
        "seconds": anchor_seconds})
    say(f"{tag} anchor K={k_anchor}: {anchor} ({anchor_metric.name} {anchor.metrics['objective']:.4g})")

    return objectives, graph, anchor, study


def stage3_path(cell: Cell, objectives, graph, reference: Schedule, anchor: Schedule, study, anchor_metric):
    """The measured budget path (knots at every budget, OT between); plain OT and the direct graph search too."""
    tag, steps, args, budgets, costs_table = cell.tag, cell.steps, cell.args, cell.budgets, cell.costs_table
    k_ref, k_anchor = budgets[0], budgets[-1]
    begin = time.perf_counter()
    runs_before = sum(o.sampling_runs for o in objectives)
    evals_before = sum(o.evaluations for o in objectives)
    known = {t.user_attrs[anchor_search.ATTR_SCHEDULE]: float(t.value) for t in study.trials
             if t.value is not None and anchor_search.ATTR_SCHEDULE in t.user_attrs}
    def per_sample(schedule: Schedule) -> list[float]:
        return [value for o in objectives for value in o.samples(schedule)]

    path = build_path(per_sample, reference, anchor.with_metadata(params={}, metrics={}), graph,
                      neighbour_evals=args.neighbour_evals, known=known, metric=anchor_metric.name)
    costs_table.append({
        "stage": f"3 budget path: knots at K={k_anchor}..{k_ref}",
        "detail": (f"{path.scored} schedules scored (OT, graph, uniform"
                   + (f", up to {args.neighbour_evals} one-step moves per knot)" if args.neighbour_evals else ")")),
        "runs": sum(o.sampling_runs for o in objectives) - runs_before,
        "evaluations": sum(o.evaluations for o in objectives) - evals_before,
        "seconds": time.perf_counter() - begin})
    for knot in path.knots:
        say(f"{tag} knot K={knot.budget}: {knot.schedule} {anchor_metric.name} {knot.objective:.4g} ({knot.origin})")
    otcache = {k: path_schedule(path, k) for k in budgets}
    plain_ot = {k: interpolate(reference, anchor, k, mapping=args.mapping) for k in budgets}
    begin = time.perf_counter()
    direct = {k: graph_schedule(graph, steps, k) for k in budgets}
    costs_table.append({"stage": "graph search (direct): minimax at every budget",
                        "detail": "reuses the stage-1 cost matrix", "runs": 0, "evaluations": 0,
                        "seconds": time.perf_counter() - begin})

    return path, otcache, plain_ot, direct


def graph_schedule(graph: dict, steps: int, k: int) -> Schedule:
    """The direct graph search's schedule at budget ``k`` (from the stage-1 matrix's solutions)."""
    return Schedule(steps, graph[k].compute, source="reference")


def tune_easycache(cell: Cell) -> dict:
    """EasyCache with its threshold bisected to each budget on the calibration prompts."""
    tag, target, args, budgets, costs_table = cell.tag, cell.target, cell.args, cell.budgets, cell.costs_table
    cal_setups, cal_seeds, counter = cell.cal_setups, cell.cal_seeds, cell.counter
    say(f"{tag} EasyCache: bisecting reuse_threshold on the calibration prompts")
    tuner = EasyCacheTuner(target, cal_setups, cal_seeds, counter, args.easycache_start, args.easycache_end,
                           args.easycache_iters)
    easy = {k: tuner.tune(k) for k in budgets}
    for k, e in easy.items():
        say(f"{tag} EasyCache K={k}: threshold {e.threshold:.5g}, start {e.start:g}, calibration NFE {e.cal_nfe:g}"
            + (f" ({e.note})" if e.note else ""))
    costs_table.append({"stage": "EasyCache: reuse_threshold bisection",
                        "detail": f"{len(tuner.measured)} settings x {sum(map(len, cal_seeds))} prompt-seed(s)",
                        "runs": tuner.runs, "evaluations": tuner.evaluations, "seconds": tuner.seconds})

    return easy


def cell_points(cell: Cell, path, otcache: dict, plain_ot: dict, direct: dict, easy: dict) -> list:
    """Every method at every budget, as points to evaluate (identical schedules marked to share one run)."""
    target, steps, budgets, speedups = cell.target, cell.steps, cell.budgets, cell.args.speedups
    k_ref, k_anchor = budgets[0], budgets[-1]
    points = [Point("full compute", f"full compute ({steps}/{steps})", steps, 1.0, None)]
    for s, k in zip(speedups, budgets):
        knot = path.knot_at(k)
        stage = f"measured knot: {knot.origin}" if knot else "OT between knots"
        points.append(Point("OTCache", f"OTCache ({stage})", k, s, otcache[k]))
        if k not in (k_ref, k_anchor):
            points.append(Point("OT interpolation (paper)",
                                f"OT interpolation of reference and anchor, lambda={plain_ot[k].params['lambda']:.2f}",
                                k, s, plain_ot[k]))
        points.append(Point("graph search (direct)", "graph search (direct)", k, s, direct[k]))
        points.append(Point("uniform", "uniform", k, s, Schedule.uniform(steps, k)))
        e = easy[k]
        points.append(Point("EasyCache", f"EasyCache (threshold {e.threshold:.4g}, start {e.start:g})", None, s,
                            easycache=e, note=e.note))
    for name, schedule in published_schedules(target, steps):
        resampled = f", resampled from N={schedule.params['resampled_from']}" if "resampled_from" in schedule.params else ""
        match = " (= a target budget)" if schedule.budget in budgets else ""
        points.append(Point("LeMiCa (published)", f"{name}{resampled}{match}", schedule.budget, None, schedule))
    # Identical schedules are sampled once per prompt and share the measurement.
    first_of: dict[str, Point] = {}
    for point in points:
        if point.key() in first_of and point.key() != "full":
            point.note = (point.note + "; " if point.note else "") + f"same schedule as {first_of[point.key()].label}"
        first_of.setdefault(point.key(), point)

    return points


def evaluate_points(cell: Cell, points: list, lpips_metric) -> list[float]:
    """Sample every point on the held-out prompts, full compute first and again last; full-compute seconds."""
    tag, target, args, counter, mode = cell.tag, cell.target, cell.args, cell.counter, cell.mode
    eval_setups, eval_seeds = cell.eval_setups, cell.eval_seeds
    models_for = {id(p): easycache_model(target.model, p.easycache.threshold, p.easycache.start, p.easycache.end)
                  for p in points if p.easycache is not None}
    full_seconds: list[float] = []
    for k, (setup, seed) in enumerate(zip(eval_setups, eval_seeds)):
        say(f"{tag} evaluating prompt {k + 1}/{len(eval_setups)} (seed {seed}): {target.eval_prompts[k]}")
        first = sample_timed(args.repeats, setup, counter, seed)
        full_frames = target.frames(first.final)
        done: dict[str, Run] = {}
        for point in points[1:]:
            key = point.key()
            if key not in done:
                if point.easycache is not None:
                    done[key] = sample_timed(args.repeats, setup, counter, seed, model=models_for[id(point)])
                else:
                    done[key] = sample_timed(args.repeats, setup, counter, seed, point.schedule, mode)
            run = done[key]
            point.per_prompt.append({
                "prompt": target.eval_prompts[k], "seed": seed, "nfe": run.nfe, "scheduled_evaluations": run.scheduled,
                "seconds": run.seconds,
                **fidelity(run.final, target.frames(run.final), first.final, full_frames, lpips_metric)})
        last = sample_timed(args.repeats, setup, counter, seed)
        full_seconds.append((first.seconds + last.seconds) / 2)
        # The full-compute row compares the closing run with the opening one: a determinism check.
        points[0].per_prompt.append({
            "prompt": target.eval_prompts[k], "seed": seed, "nfe": first.nfe, "scheduled_evaluations": first.scheduled,
            "seconds": full_seconds[-1], "seconds_first": first.seconds, "seconds_last": last.seconds,
            **fidelity(last.final, target.frames(last.final), first.final, full_frames, lpips_metric)})

    return full_seconds


def result_rows(cell: Cell, points: list, full_seconds: list[float]) -> list[dict]:
    tag, steps = cell.tag, cell.steps
    rows = []
    for point in points:
        pp = point.per_prompt
        nfe_mean = float(np.mean([r["nfe"] for r in pp]))
        row = {
            "method": point.method, "label": point.label, "budget": point.budget,
            "target_speedup": point.target_speedup,
            "ideal_speedup": steps / point.budget if point.budget else None,
            "measured_speedup": steps / nfe_mean if nfe_mean else None,
            "schedule": str(point.schedule) if point.schedule is not None else None,
            "nfe_mean": nfe_mean, "nfe_min": min(r["nfe"] for r in pp), "nfe_max": max(r["nfe"] for r in pp),
            "wall_speedup": sum(full_seconds) / max(sum(r["seconds"] for r in pp), 1e-12),
            "note": point.note, "per_prompt": pp,
        }
        for metric in ("psnr", "ssim", "lpips", "rel_l2"):
            values = [r[metric] for r in pp]
            row[metric] = None if any(v is None for v in values) else float(np.mean(values))
        if point.easycache is not None:
            row["easycache"] = dataclasses.asdict(point.easycache)
            row["target_budget"] = point.easycache.budget
        if point.schedule is not None:
            row["nfe_equals_budget"] = all(r["nfe"] == point.budget for r in pp)
        rows.append(row)
        if point.schedule is not None and not row["nfe_equals_budget"]:
            say(f"{tag} WARNING: {point.label} K={point.budget} ran the transformer "
                f"{[r['nfe'] for r in pp]} times")
    return rows


def cell_result(cell: Cell, reference, anchor, otcache, plain_ot, path, direct, costs, rows) -> dict:
    target, steps, counter, budgets = cell.target, cell.steps, cell.counter, cell.budgets
    speedups, window, mode, cal_seeds, eval_seeds = cell.args.speedups, cell.window, cell.mode, cell.cal_seeds, cell.eval_seeds
    k_ref, k_anchor, costs_table = budgets[0], budgets[-1], cell.costs_table
    return {
        "model": target.name, "family": target.family, "target": target.info, "steps": steps,
        "sampler": target.sampler, "scheduler": target.scheduler, "cfg": target.cfg,
        "max_skip": window, "reuse": mode, "speedups": speedups, "budgets": budgets,
        "reference_budget": k_ref, "anchor_budget": k_anchor, "nfe_counted_at": counter.where,
        "calibration_prompts": target.cal_prompts, "calibration_seeds": cal_seeds,
        "eval_prompts": target.eval_prompts, "eval_seeds": eval_seeds,
        "schedules": {"reference": str(reference), "anchor": str(anchor),
                      "anchor_objective": anchor.metrics["objective"],
                      "otcache": {str(k): str(v) for k, v in otcache.items()},
                      "plain_ot": {str(k): str(v) for k, v in plain_ot.items()},
                      "path": [[k.budget, str(k.schedule), k.objective, k.origin] for k in path.knots],
                      "direct": {str(k): str(v) for k, v in direct.items()},
                      "edge_costs_mean": costs_to_json(costs)},
        "calibration_cost": costs_table, "rows": rows,
    }




# ----------------------------------------------------------------- estimate


def estimate(target: BenchTarget, args, counter: TransformerCalls) -> dict[int, float]:
    """Seconds per step count, from one timed full run and one cached run of the first calibration prompt."""
    n0 = min(args.steps)
    setup = SamplingSetup(target.model, *target.cal_conds[0], target.latent, target.sampler, target.scheduler, n0,
                          float(target.cfg))
    sample(setup, counter, 0)  # warm-up
    full = min((sample(setup, counter, 0) for _ in range(2)), key=lambda r: r.seconds)
    t_eval = full.seconds / max(full.nfe, 1)
    k0 = budgets_for(n0, args.speedups)[-1]
    cached = sample(setup, counter, 0, Schedule.uniform(n0, k0), args.reuse)
    t_skip = max(0.0, (cached.seconds - cached.nfe * t_eval) / max(n0 - k0, 1))
    say(f"[{target.name}] one transformer evaluation: {t_eval * 1000:.1f} ms; a skipped step: {t_skip * 1000:.1f} ms")
    out = {}
    cal = len(target.cal_conds) * args.cal_seeds
    for n in args.steps:
        budgets = budgets_for(n, args.speedups)
        w = args.max_skip or auto_window(n, budgets[-1])
        edges = sum(edge_evaluations(n, i, j) for i, j in window_edges(n, w))

        def run_cost(k: float) -> float:
            return k * t_eval + (n - k) * t_skip

        stage1 = cal * (edges + n + 3) * t_eval
        stage2 = args.trials * cal * run_cost(budgets[-1])
        easy = len(budgets) * (args.easycache_iters + 2) * cal * run_cost(float(np.mean(budgets)))
        points = 4 * len(budgets) + 4
        evaluation = len(target.eval_conds) * args.repeats * (2 * n * t_eval + points * run_cost(float(np.mean(budgets))))
        out[n] = stage1 + stage2 + easy + evaluation
        say(f"[{target.name}] estimate N={n}: stage 1 {stage1 / 60:.1f} min, stage 2 {stage2 / 60:.1f} min, "
            f"EasyCache bisection {easy / 60:.1f} min, evaluation {evaluation / 60:.1f} min")
    return out


# ----------------------------------------------------------------- outputs


def fmt(value, digits: int = 2, none: str = "n/a") -> str:
    if value is None:
        return none
    return f"{value:.{digits}f}"


def margins(cell: dict) -> list[dict]:
    """Per target speedup: OTCache's PSNR, the best baseline's, and the margin."""
    out = []
    for speedup in cell["speedups"]:
        rows = [r for r in cell["rows"] if r["target_speedup"] == speedup and r["psnr"] is not None]
        ours = next((r for r in rows if r["method"] == "OTCache"), None)
        others = [r for r in rows if r["method"] in BASELINES]
        if ours is None or not others:
            continue
        best = max(others, key=lambda r: r["psnr"])
        out.append({"speedup": speedup, "otcache": ours["psnr"], "best": best["psnr"], "best_method": best["method"],
                    "margin": ours["psnr"] - best["psnr"]})
    return out


def margins_table(cells: list[dict]) -> str:
    lines = ["OTCache against the best of the direct graph search, uniform and EasyCache (PSNR, dB):", "",
             "| model | N | speedup | OTCache | best baseline | margin |", "|---|---:|---:|---:|---|---:|"]
    every = []
    for cell in cells:
        for m in margins(cell):
            every.append(m["margin"])
            lines.append(f"| {cell['model']} | {cell['steps']} | {m['speedup']:g}x | {m['otcache']:.2f} | "
                         f"{m['best_method']} {m['best']:.2f} | {m['margin']:+.2f} |")
    if every:
        lines += ["", f"Mean margin {np.mean(every):+.2f} dB over {len(every)} cells; worst {min(every):+.2f} dB; "
                      f"OTCache within 0.2 dB of the best or better in {sum(m >= -0.2 for m in every)} of {len(every)}."]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        "# OTCache comparison",
        "",
        f"Written by `{result['command']}`. Device {result['environment']['device']}, "
        f"torch {result['environment']['torch']}, {cfg['threads']} thread(s). Held-out evaluation prompts and "
        f"seeds no calibration saw; calibration on separate prompts and seeds.",
        "",
        f"- Metrics against full compute of the same prompt and seed: PSNR and SSIM on decoded pixels, LPIPS "
        f"({result['metrics']['lpips']}), relative L2 of the final latent (||z - z_full|| / ||z_full||). Means over "
        f"the evaluation prompts.",
        f"- Anchor search objective: {result['metrics']['anchor_metric']}"
        + (f" ({result['metrics']['anchor_metric_note']})" if result['metrics']['anchor_metric_note'] else "") + ".",
        "- NFE: transformer runs per sampling, counted by a forward hook on the first transformer block; mean over "
        "prompts (EasyCache varies per prompt).",
        f"- Wall speedup: {TIMING}. The tiny models are small enough that the embeddings, final layer and "
        f"ComfyUI's per-step overhead (which `block` reuse still runs) take a visible share of a step, so wall "
        f"speedups stay below N/K there.",
        "- EasyCache: ComfyUI's EasyCacheNode behind an outer DIFFUSION_MODEL wrapper that hands it a copy of "
        "the model input (in float32 its in-place `x += diff` would corrupt the denoised value); its "
        "reuse_threshold bisected on the calibration prompts until their mean computed steps match the budget; "
        "when the budget is out of reach at the node's maximum threshold 3.0, start_percent is lowered "
        "(0.10, 0.05, 0.0; shown in the row).",
        "- LeMiCa (published): the family's published schedules (FLUX.1-dev for FLUX, Qwen-Image, "
        "HunyuanVideo 1.5 for HunyuanVideo) resampled to N, as points at their own speedups.",
        "- OTCache: reference = minimax graph search on global edge costs at the smallest speedup's budget; "
        "anchor = Optuna search at the largest (the graph's own solution there among its seeds); between them "
        "the measured budget path: at every budget the graph solution, unless the OT-interpolated or the "
        "uniform schedule beats it on the calibration samples by more than one paired standard error"
        + (f", then up to {cfg['neighbour_evals']} one-step moves (hill climbing). " if cfg.get("neighbour_evals")
           else " (no one-step moves). ")
        + "OT interpolation (paper) is plain stage 3 between the same reference and anchor.",
        "",
        margins_table(result["cells"]),
        "",
    ]
    for cell in result["cells"]:
        lines += [
            f"## {cell['model']}, N = {cell['steps']}",
            "",
            f"{cell['sampler']} / {cell['scheduler']} / cfg {cell['cfg']:g}; reuse `{cell['reuse']}`; window "
            f"W = {cell['max_skip']}; {len(cell['calibration_prompts'])} calibration prompt(s) x "
            f"{len(cell['calibration_seeds'][0])} seed(s); {len(cell['eval_prompts'])} evaluation prompt(s); "
            f"model: {', '.join(f'{k} {v}' for k, v in cell['target'].items())}.",
            "",
            "| method | budget K | N/K | NFE (measured) | wall speedup | PSNR (dB) | SSIM | LPIPS | rel L2 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in cell["rows"]:
            k = row["budget"] if row["budget"] is not None else f"(target {row['target_budget']})"
            ideal = fmt(row["ideal_speedup"]) if row["ideal_speedup"] else f"{row['measured_speedup']:.2f}*"
            nfe = f"{row['nfe_mean']:.2f}" if row["nfe_min"] != row["nfe_max"] else f"{row['nfe_mean']:.0f}"
            label = row["label"] + (f" [{row['note']}]" if row["note"] else "")
            lines.append(f"| {label} | {k} | {ideal} | {nfe} | {row['wall_speedup']:.2f} | {fmt(row['psnr'])} | "
                         f"{fmt(row['ssim'], 4)} | {fmt(row['lpips'], 4)} | {fmt(row['rel_l2'], 4)} |")
        full = cell["rows"][0]["per_prompt"]
        spread = np.mean([abs(r["seconds_first"] - r["seconds_last"]) / max(r["seconds"], 1e-12) for r in full])
        lines += [
            "",
            f"Full compute: {np.mean([r['seconds'] for r in full]):.3f} s per sampling run; its opening and closing "
            f"runs per prompt differ by {100 * spread:.1f}% on average (timing noise). EasyCache has no budget of "
            "its own: K shows the target, N/K (marked *) is N / its measured mean NFE.",
            "",
            "Calibration cost:",
            "",
            "| stage | detail | sampling runs | model evaluations | wall s |",
            "|---|---|---:|---:|---:|",
        ]
        for c in cell["calibration_cost"]:
            lines.append(f"| {c['stage']} | {c['detail']} | {c['runs']} | {c['evaluations']} | {c['seconds']:.1f} |")
        s = cell["schedules"]
        lines += ["", "Schedules:", "", f"- reference: `{s['reference']}`",
                  f"- anchor: `{s['anchor']}`"]
        for k, text in s["otcache"].items():
            lines.append(f"- OTCache K={k}: `{text}`; direct graph search: `{s['direct'][k]}`")
        lines.append("")
    return "\n".join(lines)


COLOURS = {"OTCache": (214, 39, 40), "OT interpolation (paper)": (255, 127, 14),
           "graph search (direct)": (31, 119, 180), "uniform": (127, 127, 127),
           "EasyCache": (44, 160, 44), "LeMiCa (published)": (148, 103, 189)}


def plot_png(result: dict) -> bytes:
    """PSNR against speedup, one curve per method, one panel per model and N (PIL; no matplotlib needed)."""
    from PIL import Image, ImageDraw

    cells = result["cells"]
    models = list(dict.fromkeys(c["model"] for c in cells))
    steps = list(dict.fromkeys(c["steps"] for c in cells))
    pw, ph, margin, top = 460, 300, 48, 64
    image = Image.new("RGB", (pw * len(steps), ph * len(models) + top), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), "PSNR (dB) against full compute vs speedup N / measured NFE, held-out prompts", fill="black")
    x, y = 10, 30
    for method, colour in COLOURS.items():
        width = 40 + int(draw.textlength(method))
        if x + width > image.width - 10:
            x, y = 10, y + 14
        draw.line([(x, y + 6), (x + 18, y + 6)], fill=colour, width=3)
        draw.text((x + 22, y), method, fill="black")
        x += width
    for cell in cells:
        ox = steps.index(cell["steps"]) * pw
        oy = top + models.index(cell["model"]) * ph
        series: dict[str, list[tuple[float, float]]] = {}
        for row in cell["rows"]:
            if row["method"] in COLOURS and row["psnr"] is not None:
                series.setdefault(row["method"], []).append((row["measured_speedup"], row["psnr"]))
        values = [p for pts in series.values() for p in pts]
        if not values:
            continue
        xmax = max(v[0] for v in values) * 1.08
        ylo, yhi = min(v[1] for v in values), max(v[1] for v in values)
        ylo, yhi = math.floor(ylo - 1), math.ceil(yhi + 1)
        x0, y0, x1, y1 = ox + margin, oy + 24, ox + pw - 14, oy + ph - 30

        def to_px(sx: float, sy: float) -> tuple[float, float]:
            return (x0 + (sx - 1.0) / (xmax - 1.0) * (x1 - x0), y1 - (sy - ylo) / (yhi - ylo) * (y1 - y0))

        draw.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
        draw.text((ox + 8, oy + 6), f"{cell['model']}, N={cell['steps']}", fill="black")
        for tick in range(1, int(xmax) + 1):
            px, _ = to_px(tick, ylo)
            draw.line([(px, y1), (px, y1 + 4)], fill="black")
            draw.text((px - 4, y1 + 6), str(tick), fill="black")
        step = max(1, round((yhi - ylo) / 5))
        for tick in range(int(ylo), int(yhi) + 1, step):
            _, py = to_px(1.0, tick)
            draw.line([(x0 - 4, py), (x0, py)], fill="black")
            draw.text((ox + 8, py - 6), str(tick), fill="black")
        for method in reversed(COLOURS):  # OTCache drawn last, on top of equal schedules
            if method not in series:
                continue
            pixels = [to_px(*p) for p in sorted(series[method])]
            width, radius = (3, 4) if method == "OTCache" else (2, 3)
            if len(pixels) > 1:
                draw.line(pixels, fill=COLOURS[method], width=width)
            for px, py in pixels:
                draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=COLOURS[method])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def anchor_metric_for(name: str, lpips_metric):
    """The anchor search's objective: the loaded LPIPS (or its stated fallback) for ``lpips``, else the named metric."""
    return lpips_metric if name == "lpips" else load_metric(name)


def write_outputs(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_atomic(out / "comparison.json", json.dumps(result, indent=1, sort_keys=False) + "\n"),
             write_atomic(out / "comparison.md", markdown(result)),
             write_atomic(out / "comparison.png", plot_png(result))]
    return paths


# ----------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Defaults marked [profile] come from --quick or the full profile.")
    ap.add_argument("--quick", action="store_true", help="smoke profile: flux, N=10, 3 speedups, 1+1 prompts, 4 trials")
    ap.add_argument("--models", help="tiny model families, comma separated [profile: flux,qwen_image,hunyuan_video]")
    ap.add_argument("--steps", help="step counts N, comma separated [profile: 50,28]")
    ap.add_argument("--speedups", help="target speedups N/K, increasing; the first is the reference's, the last "
                                       "the anchor's [profile: 2,3,4.5,6]")
    ap.add_argument("--cal-prompts", type=int, help="calibration prompts [profile: 2]")
    ap.add_argument("--cal-seeds", type=int, help="seeds per calibration prompt [profile: 2]")
    ap.add_argument("--eval-prompts", type=int, help="held-out evaluation prompts, one seed each [profile: 8]")
    ap.add_argument("--trials", type=int, help="anchor search trials [profile: 30]")
    ap.add_argument("--easycache-iters", type=int, help="bisection steps per budget [profile: 8]")
    ap.add_argument("--repeats", type=int, help="timing repeats of every run, median taken [profile: 1]")
    ap.add_argument("--knots", type=int, default=anchor_search.DEFAULT_KNOTS, help="anchor warp knots (default 5)")
    ap.add_argument("--neighbour-evals", type=int, default=0,
                    help="budget path: one-step neighbours scored per knot (default 0, as the node)")
    ap.add_argument("--max-skip", type=int, default=0,
                    help="graph window W; 0 = ceil((N-1)/(K_min-1)) + 1 for the smallest budget (default 0)")
    ap.add_argument("--reuse", default="auto", choices=("auto", "block", "residual", "output"),
                    help="Cached Model reuse mode for every schedule method (default auto: output)")
    ap.add_argument("--mapping", default="linear", choices=("linear", "log"), help="interpolation weight mapping")
    ap.add_argument("--anchor-metric", default="lpips", choices=METRIC_CHOICES,
                    help="anchor search objective (lpips falls back to 1 - SSIM, stated, without its weights)")
    ap.add_argument("--easycache-start", type=float, default=0.15, help="EasyCache start_percent (node default 0.15)")
    ap.add_argument("--easycache-end", type=float, default=0.95, help="EasyCache end_percent (node default 0.95)")
    ap.add_argument("--seed", type=int, default=0, help="anchor search (Optuna TPE) seed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (float reduction order depends on it)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="output folder (default benchmarks/results)")
    ap.add_argument("--verbose", action="store_true", help="keep ComfyUI's and the pack's INFO logging")
    ap.add_argument("--estimate-only", action="store_true", help="time one evaluation, print the estimate and stop")
    ap.add_argument("--stage1-cache", type=Path,
                    help="keep stage 1's calibrations here: a rerun with the same models, prompts, seeds, N, W, reuse "
                         "and --threads reads them back (and an interrupted one resumes); the cost table still shows "
                         "what they cost when measured")
    ap.add_argument("--stage1-only", action="store_true", help="run stage 1 into --stage1-cache and stop")
    tiny = ap.add_argument_group("tiny models")
    tiny.add_argument("--random-weights", action="store_true",
                      help="untrained tiny models (seeded): smoke runs only, the numbers mean nothing")
    tiny.add_argument("--tiny-weights-dir", type=Path, default=REPO / "demo" / "weights",
                      help="folder of <family>.safetensors (default demo/weights, what load_tiny reads)")
    tiny.add_argument("--tiny-latent", type=int, help="latent height = width override (smoke runs) [profile: none]")
    real = ap.add_argument_group("real checkpoints (all of --diffusion-model, --text-encoder, --vae, --prompts)")
    real.add_argument("--diffusion-model", help="diffusion model file (as UNETLoader loads it)")
    real.add_argument("--text-encoder", action="append", help="text encoder file; repeat for two (FLUX: clip_l, t5xxl)")
    real.add_argument("--clip-type", default="flux", help="flux | qwen_image | hunyuan_video (default flux)")
    real.add_argument("--vae", help="VAE file (as VAELoader loads it)")
    real.add_argument("--prompts", help="text file, one prompt per line: the first --cal-prompts calibrate, the next "
                                        "--eval-prompts are evaluated")
    real.add_argument("--negative", default="", help="negative prompt (used when cfg > 1)")
    real.add_argument("--width", type=int, default=1024)
    real.add_argument("--height", type=int, default=1024)
    real.add_argument("--frames", type=int, default=None, help="video length in frames (HunyuanVideo)")
    real.add_argument("--cfg", type=float, default=1.0, help="CFG scale (FLUX.1-dev: 1 with guidance 3.5)")
    real.add_argument("--guidance", type=float, default=None,
                      help="distilled guidance (FluxGuidance); default 3.5 for flux, 6 for hunyuan_video")
    real.add_argument("--sampler", default="euler")
    real.add_argument("--scheduler", default="simple")
    real.add_argument("--weight-dtype", default="default", choices=("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"))
    args = ap.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    args.steps = [int(s) for s in str(args.steps).split(",")]
    args.speedups = [float(s) for s in str(args.speedups).split(",")]
    if len(args.speedups) < 2:
        ap.error("--speedups needs at least two values (the reference's and the anchor's)")
    for name in ("cal_prompts", "cal_seeds", "eval_prompts", "trials", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cal_seeds > 100:
        ap.error("--cal-seeds must be at most 100 (calibration prompts' seed ranges are 100 apart)")
    if any(s < 1 for s in args.speedups) or args.speedups != sorted(args.speedups):
        ap.error(f"--speedups must be >= 1 and increasing; got {args.speedups}")
    args.profile = "quick" if args.quick else "full"
    return args


def combine(paths: list[Path], out: Path, command: str) -> int:
    """One table, plot and JSON from the ``comparison.json`` of several runs (their cells, as measured)."""
    parts = []
    for path in paths:
        try:
            part = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        if part.get("format") != FORMAT:
            print(f"error: {path} is not a benchmarks/run.py result (format {part.get('format')!r})", file=sys.stderr)
            return 2
        parts.append(part)
    result = dict(parts[0])
    result["command"] = "; ".join(p["command"] for p in parts) + f"; then {command}"
    result["parts"] = [{"command": p["command"], "seconds": p["seconds"], "config": p["config"]} for p in parts]
    result["seconds"] = sum(p["seconds"] for p in parts)
    result["cells"] = [cell for p in parts for cell in p["cells"]]
    for path in write_outputs(result, out):
        say(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = "benchmarks/run.py " + " ".join(argv)
    if argv and argv[0] == "--combine":
        ap = argparse.ArgumentParser(prog="benchmarks/run.py --combine")
        ap.add_argument("results", nargs="+", type=Path, help="comparison.json files of earlier runs")
        ap.add_argument("--out", type=Path, default=HERE / "results")
        opts = ap.parse_args(argv[1:])
        return combine(opts.results, opts.out, command)
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        for n in args.steps:
            budgets_for(n, args.speedups)
        if args.stage1_only and args.stage1_cache is None:
            raise BenchError("--stage1-only keeps nothing without --stage1-cache DIR")
        unknown = [m for m in args.models if m not in TINY_FAMILIES]
        if unknown:
            raise BenchError(f"unknown --models {', '.join(unknown)}; choose from {', '.join(TINY_FAMILIES)}")
        if not (args.diffusion_model or args.text_encoder or args.vae or args.prompts) and not args.random_weights:
            missing = [m for m in args.models if not (args.tiny_weights_dir / f"{m}.safetensors").is_file()]
            if missing:
                raise BenchError(
                    f"tiny model weights missing: {', '.join(str(args.tiny_weights_dir / f'{m}.safetensors') for m in missing)}. "
                    "Train them with benchmarks/tiny/train.py --family <name> (see benchmarks/tiny/README.md), "
                    "or pass --random-weights for a smoke run whose numbers mean nothing.")
        factories = make_targets(args, args.cal_prompts, args.eval_prompts)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

    lpips_metric = load_metric("lpips", device=comfy.model_management.get_torch_device())
    lpips_note = "lpips-alex" if lpips_metric.is_lpips else f"n/a: {lpips_metric.note}"
    anchor_metric = anchor_metric_for(args.anchor_metric, lpips_metric)
    if not lpips_metric.is_lpips:
        lpips_metric = None
    say(f"LPIPS: {lpips_note}; anchor search metric: {anchor_metric.name}")
    environment = {"device": str(comfy.model_management.get_torch_device()), "torch": torch.__version__,
                   "python": platform.python_version(), "machine": platform.machine(),
                   "cpu_threads": torch.get_num_threads()}
    cells: list[dict] = []
    estimated = False
    for make in factories:
        try:
            target = make()
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        counter = TransformerCalls(target.model)
        try:
            per_n = estimate(target, args, counter)
            if not estimated:
                total = sum(per_n.values()) * len(factories)
                say(f"estimated total: about {total / 60:.1f} min for {len(factories)} model(s) "
                    f"(from this model's timing)")
                estimated = True
            if args.estimate_only:
                continue
            for n in args.steps:
                cells.append(run_cell(target, n, args, counter, lpips_metric, anchor_metric))
            cells = [c for c in cells if c is not None]  # --stage1-only
        finally:
            counter.close()
        del target
        comfy.model_management.soft_empty_cache()
    if args.estimate_only or args.stage1_only:
        return 0
    result = {
        "format": FORMAT, "version": VERSION, "command": command,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment,
        "metrics": {"lpips": lpips_note, "anchor_metric": anchor_metric.name, "anchor_metric_note": anchor_metric.note},
        "timing": TIMING, "seconds": time.perf_counter() - started, "cells": cells,
    }
    result["config"]["threads"] = args.threads
    for path in write_outputs(result, args.out):
        say(f"wrote {path}")
    say(f"total {result['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
