"""Stage 1 on a real model: calibrate the edge costs, solve the graph, measure the schedule (OTCache Reference).

Samples like a KSampler (same inputs) to measure the cost of every edge of the step
graph (:mod:`.calibration`, :mod:`..otcache_core.edge_costs`), then picks the best path
with the requested budget (:func:`..otcache_core.graph.best_path`). The cost matrix is
cached on disk, keyed by everything it depends on except the budget and the objective,
so changing those only re-solves the graph (milliseconds, no sampling).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..otcache_core.budget_path import graph_solutions_to_params
from ..otcache_core.edge_costs import EDGE_COSTS, ERROR_METRIC, CostMatrix, min_budget, window_costs
from ..otcache_core.graph import GraphSearchError, all_graph_solutions, best_path, path_costs
from ..otcache_core.schedule import Schedule, as_integer
from ..otcache_core.shared_edges import SharedEdges
from .cache_runtime import resolve_reuse
from .calibration import (
    CalibrationStats,
    SamplingSetup,
    calibrate,
    calibration_key,
    calibration_path,
    check_uncached,
    load_or_new,
    measure_schedule,
)
from .fingerprints import conditioning_fingerprint, model_fingerprint
from .plots import cost_heatmap
from .saved_results import computed_for, costs_from_json, costs_to_json, find_saved, saved_record, used_saved_text

log = logging.getLogger("otcache")

NODE_TYPE = "OTCacheReference"
DEFAULT_MAX_SKIP = 5
DEFAULT_SEEDS = 2


# ----------------------------------------------------------------- the reference


@dataclasses.dataclass
class ReferenceResult:
    schedule: Schedule
    costs: np.ndarray
    matrix: CostMatrix
    image: torch.Tensor
    text: str
    path: Path
    calibration: CalibrationStats  # what this call sampled (zero runs on a cache hit)
    measurement_evaluations: int = 0
    measurement_runs: int = 0


def default_budget(steps: int, max_skip: int) -> int:
    """A conservative N/2 (rounded up), raised to the window's minimum if needed."""
    return min(steps, max((steps + 1) // 2, min_budget(steps, max_skip)))


def _check_int(name: str, value: Any, low: int) -> int:
    return as_integer(value, f"OTCache Reference: {name}", low=low, error=ValueError)


@dataclasses.dataclass(frozen=True)
class ReferenceOptions:
    """What OTCache Reference calibrates and solves for, beyond the sampling set-up (checked on creation)."""

    seed: int = 0
    seeds: int = DEFAULT_SEEDS
    budget: int = 0  # 0: default_budget(steps, max_skip)
    edge_cost: str = "fast"
    objective: str = "minimax"
    max_skip: int = DEFAULT_MAX_SKIP
    reuse: str = "auto"
    measure: bool = True
    tail_batch: int = 1  # tails run together in one model call (same result; a GPU runs them faster)
    storage: str = ""  # "": this machine's files; a database URL: one calibration shared by every worker on it

    def __post_init__(self) -> None:
        for name, low in (("seeds", 1), ("max_skip", 2), ("budget", 0), ("seed", 0), ("tail_batch", 1)):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), low))
        if self.edge_cost not in EDGE_COSTS:
            raise ValueError(f"OTCache Reference: edge_cost must be one of {', '.join(EDGE_COSTS)}, "
                             f"got {self.edge_cost!r}")


def reference_setup(model, positive, negative, latent_image: dict, sampler_name: str, scheduler: str, steps: int,
                    cfg: float) -> SamplingSetup:
    """The node's sampling inputs as a :class:`SamplingSetup` (a reference needs at least 3 steps)."""
    steps = _check_int("steps", steps, 3)
    return SamplingSetup(model, positive, negative, latent_image, sampler_name, scheduler, steps, float(cfg))


def build_reference(setup: SamplingSetup, options: ReferenceOptions, *,
                    progress: Callable[[int, int], None] | None = None,
                    status: Callable[[str], None] | None = None) -> ReferenceResult:
    """Calibrate (or load the cached calibration), search the graph, measure, draw. See the node."""
    steps, opt = setup.steps, options
    budget = opt.budget or default_budget(steps, opt.max_skip)
    try:  # feasibility first, before any sampling: the graph module's own messages
        best_path(window_costs(steps, opt.max_skip), budget, opt.objective)
    except GraphSearchError as exc:
        raise GraphSearchError(f"OTCache Reference (steps {steps}, max_skip {opt.max_skip}): {exc}") from None
    check_uncached(setup.model)
    mode = resolve_reuse(setup.model, opt.reuse)
    key = calibration_key(setup, opt.seed, opt.seeds, opt.edge_cost, opt.max_skip, mode)
    path = calibration_path(key)
    family = type(setup.model.get_model_object("diffusion_model")).__name__
    matrix, recovery = load_or_new(path, steps, opt.max_skip, opt.seeds, opt.edge_cost, info={
        "model": family, "sampler": setup.sampler_name, "scheduler": setup.scheduler, "steps": steps,
        "cfg": setup.cfg, "seed": opt.seed, "seeds": opt.seeds, "edge_cost": opt.edge_cost,
        "max_skip": opt.max_skip, "reuse": mode, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    if matrix.complete and all(f"final_{s}" in matrix.extras for s in range(opt.seeds)):
        stats = CalibrationStats()
    else:
        shared = SharedEdges(opt.storage.strip(), key) if opt.storage.strip() else None
        try:
            stats = calibrate(setup, opt.seed, matrix, mode, path=path, progress=progress, status=status,
                              tail_batch=opt.tail_batch, shared=shared)
            if shared is not None:
                matrix.info["workers"] = shared.workers()
        finally:
            if shared is not None:
                shared.close()

    costs = matrix.costs()
    compute = best_path(costs, budget, opt.objective)
    measured = _measure(setup, opt, matrix, path, Schedule(steps, compute), budget, mode) if opt.measure else None
    metrics = _reference_metrics(opt, matrix, stats, path_costs(costs, compute), measured)
    params = {"edge_cost": opt.edge_cost, "objective": opt.objective, "max_skip": opt.max_skip, "seed": opt.seed,
              "seeds": opt.seeds, "cfg": setup.cfg, "reuse": mode, "budget": budget, "calibration": key}
    if opt.edge_cost == "local":
        params["preview"] = True
    params["graph_solutions"] = graph_solutions_to_params(all_graph_solutions(costs, opt.objective))
    schedule = Schedule(steps, compute, model=family, sampler=setup.sampler_name, scheduler=setup.scheduler,
                        source="reference", params=params, metrics=metrics)
    text = _summary(schedule, opt.edge_cost, opt.objective, matrix, stats, measured, path)
    if recovery:
        text += f"\nrecovery: {recovery}"
    evaluations, runs = (measured.evaluations, measured.runs) if measured else (0, 0)
    return ReferenceResult(schedule, costs, matrix, cost_heatmap(costs, compute), text, path, stats, evaluations, runs)


def reference_for(setup: SamplingSetup, options: ReferenceOptions) -> dict:
    """What a reference is computed for (:mod:`.saved_results`): a saved one is used only for the same."""
    return computed_for(model_fingerprint(setup.model), setup.sampler_name, setup.scheduler, setup.steps, setup.cfg,
                        options.budget or default_budget(setup.steps, options.max_skip), edge_cost=options.edge_cost,
                        objective=options.objective, max_skip=options.max_skip, seed=options.seed,
                        seeds=options.seeds, reuse=resolve_reuse(setup.model, options.reuse))


def reference_or_saved(setup: SamplingSetup, options: ReferenceOptions, saved_choice: str, extra_pnginfo, node_id,
                       **hooks) -> tuple[Schedule, torch.Tensor, str, dict]:
    """(schedule, heatmap, text, saved record): the workflow's saved result when it was computed for these
    inputs (no sampling), else :func:`build_reference`."""
    for_ = reference_for(setup, options)
    prompt = conditioning_fingerprint(setup.positive, setup.negative)
    found = find_saved(saved_choice, extra_pnginfo, node_id, NODE_TYPE, for_)
    if found is not None:
        schedule, record = found
        image = cost_heatmap(costs_from_json(record["costs"]), schedule.compute)
        text = (f"OTCache Reference K={schedule.budget}/N={schedule.steps} ({schedule.speedup:.2f}x): {schedule}\n"
                + used_saved_text(record, record.get("prompt") == prompt))
        return schedule, image, text, record
    result = build_reference(setup, options, **hooks)
    record = saved_record(NODE_TYPE, result.schedule, for_, prompt, costs=costs_to_json(result.costs))
    return result.schedule, result.image, result.text, record


@dataclasses.dataclass
class Measured:
    """Final-latent errors of the reference and of uniform at its budget, on the calibration seeds."""

    errors: list
    uniform_errors: list
    evaluations: int = 0  # what measuring cost now (0 when the matrix file held them)
    runs: int = 0


def _measure(setup: SamplingSetup, opt: ReferenceOptions, matrix: CostMatrix, path: Path, schedule: Schedule,
             budget: int, mode: str) -> Measured:
    """Sample ``schedule`` and uniform on the calibration seeds (once: kept in the matrix file)."""
    measurements: dict = matrix.info.setdefault("measurements", {})
    references = [matrix.extras[f"final_{s}"] for s in range(opt.seeds)]
    uniform = Schedule.uniform(setup.steps, budget)
    evaluations = runs = 0
    for candidate in (schedule, uniform):
        if str(candidate) not in measurements:
            errs, evals = measure_schedule(setup, opt.seed, candidate, references, mode)
            measurements[str(candidate)] = errs
            evaluations, runs = evaluations + evals, runs + len(errs)
    if runs:
        matrix.save(path)
    return Measured(measurements[str(schedule)], measurements[str(uniform)], evaluations, runs)


def _reference_metrics(opt: ReferenceOptions, matrix: CostMatrix, stats: CalibrationStats, edges: np.ndarray,
                       measured: Measured | None) -> dict:
    metrics = {
        "metric": ERROR_METRIC,
        "edge_cost": opt.edge_cost,
        "objective": opt.objective,
        "max_edge_cost": float(edges.max()),
        "sum_edge_cost": float(math.fsum(edges)),
        "calibration_evaluations": int(matrix.info.get("evaluations", 0)),
        "calibration_seconds": round(float(matrix.info.get("seconds", 0.0)), 3),
        "calibration_runs": int(matrix.info.get("runs", 0)),
        "evaluations_this_run": stats.evaluations + (measured.evaluations if measured else 0),
        "seconds_this_run": round(stats.seconds, 3),
    }
    if measured is not None:
        metrics.update({
            "calibration_error": float(np.mean(measured.errors)),
            "calibration_errors": [float(e) for e in measured.errors],
            "uniform_error": float(np.mean(measured.uniform_errors)),
        })
    return metrics


def _summary(schedule: Schedule, edge_cost: str, objective: str, matrix: CostMatrix, stats: CalibrationStats,
             measured: Measured | None, path: Path) -> str:
    label = {"global": "global (exact)",
             "fast": f"fast (global costs estimated from {len(matrix.edges)} exact tails per seed and each edge's "
                     f"arrival error; {matrix.fast_design} design)",
             "local": "local (PREVIEW: assumes errors add; use fast or global for a real reference)"}[edge_cost]
    lines = [
        f"OTCache Reference K={schedule.budget}/N={schedule.steps} ({schedule.speedup:.2f}x): {schedule}",
        f"edge cost: {label}; objective: {objective}; max_skip {matrix.max_skip}; seeds {matrix.seeds}",
    ]
    if measured is not None:
        lines.append(f"final-latent error ({ERROR_METRIC}) on the calibration seeds: {np.mean(measured.errors):.4g} "
                     f"(uniform schedule of the same budget: {np.mean(measured.uniform_errors):.4g})")
    total_evals = int(matrix.info.get("evaluations", 0))
    total_seconds = float(matrix.info.get("seconds", 0.0))
    if stats.runs:
        lines.append(f"calibration: {stats.evaluations} evaluations in {stats.runs} runs, {stats.seconds:.1f} s now "
                     f"({total_evals} evaluations, {total_seconds:.1f} s in all)")
    else:
        lines.append(f"calibration: cached, no sampling ({total_evals} evaluations, {total_seconds:.1f} s when made)")
    if matrix.info.get("workers"):
        lines.append("shared calibration, units computed per worker: "
                     + ", ".join(f"{worker} {n}" for worker, n in sorted(matrix.info["workers"].items())))
    if measured is not None and measured.evaluations:
        lines.append(f"measuring the schedule: {measured.evaluations} evaluations")
    lines.append(f"cost matrix: {path}")
    return "\n".join(lines)
