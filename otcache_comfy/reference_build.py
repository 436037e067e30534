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
from ..otcache_core.schedule import Schedule
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
from .plots import cost_heatmap

log = logging.getLogger("otcache")

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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"OTCache Reference: {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"OTCache Reference: {name} must be at least {low}, got {value}")
    return int(value)


def build_reference(model, positive, negative, latent_image: dict, seed: int, seeds: int, sampler_name: str,
                    scheduler: str, steps: int, cfg: float, budget: int = 0, edge_cost: str = "global",
                    objective: str = "minimax", max_skip: int = DEFAULT_MAX_SKIP, reuse: str = "auto",
                    measure: bool = True, *, progress: Callable[[int, int], None] | None = None,
                    status: Callable[[str], None] | None = None) -> ReferenceResult:
    """Calibrate (or load the cached calibration), search the graph, measure, draw. See the node."""
    steps = _check_int("steps", steps, 3)
    seeds = _check_int("seeds", seeds, 1)
    max_skip = _check_int("max_skip", max_skip, 2)
    budget = _check_int("budget", budget, 0)
    seed = _check_int("seed", seed, 0)
    if edge_cost not in EDGE_COSTS:
        raise ValueError(f"OTCache Reference: edge_cost must be one of {', '.join(EDGE_COSTS)}, got {edge_cost!r}")
    if budget == 0:
        budget = default_budget(steps, max_skip)
    # Feasibility first, before any sampling: the graph module's own messages.
    try:
        best_path(window_costs(steps, max_skip), budget, objective)
    except GraphSearchError as exc:
        raise GraphSearchError(f"OTCache Reference (steps {steps}, max_skip {max_skip}): {exc}") from None
    check_uncached(model)
    mode = resolve_reuse(model, reuse)

    setup = SamplingSetup(model, positive, negative, latent_image, sampler_name, scheduler, steps, float(cfg))
    key = calibration_key(setup, seed, seeds, edge_cost, max_skip, mode)
    path = calibration_path(key)
    family = type(model.get_model_object("diffusion_model")).__name__
    matrix, recovery = load_or_new(path, steps, max_skip, seeds, edge_cost, info={
        "model": family, "sampler": sampler_name, "scheduler": scheduler, "steps": steps, "cfg": float(cfg),
        "seed": seed, "seeds": seeds, "edge_cost": edge_cost, "max_skip": max_skip, "reuse": mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    finals_missing = any(f"final_{s}" not in matrix.extras for s in range(seeds))
    if matrix.complete and not finals_missing:
        stats = CalibrationStats()
    else:
        stats = calibrate(setup, seed, matrix, mode, path=path, progress=progress, status=status)

    costs = matrix.costs()
    compute = best_path(costs, budget, objective)
    edges = path_costs(costs, compute)

    measurements: dict = matrix.info.setdefault("measurements", {})
    references = [matrix.extras[f"final_{s}"] for s in range(seeds)]
    measured_evals = measured_runs = 0
    errors = uniform_errors = None
    if measure:
        changed = False
        for schedule in (Schedule(steps, compute), Schedule.uniform(steps, budget)):
            if str(schedule) not in measurements:
                errs, evals = measure_schedule(setup, seed, schedule, references, mode)
                measurements[str(schedule)] = errs
                measured_evals += evals
                measured_runs += len(errs)
                changed = True
        if changed:
            matrix.save(path)
        errors = measurements[str(Schedule(steps, compute))]
        uniform_errors = measurements[str(Schedule.uniform(steps, budget))]

    metrics = {
        "metric": ERROR_METRIC,
        "edge_cost": edge_cost,
        "objective": objective,
        "max_edge_cost": float(edges.max()),
        "sum_edge_cost": float(math.fsum(edges)),
        "calibration_evaluations": int(matrix.info.get("evaluations", 0)),
        "calibration_seconds": round(float(matrix.info.get("seconds", 0.0)), 3),
        "calibration_runs": int(matrix.info.get("runs", 0)),
        "evaluations_this_run": stats.evaluations + measured_evals,
        "seconds_this_run": round(stats.seconds, 3),
    }
    if errors is not None:
        metrics.update({
            "calibration_error": float(np.mean(errors)),
            "calibration_errors": [float(e) for e in errors],
            "uniform_error": float(np.mean(uniform_errors)),
        })
    params = {
        "edge_cost": edge_cost, "objective": objective, "max_skip": max_skip, "seed": seed, "seeds": seeds,
        "cfg": float(cfg), "reuse": mode, "budget": budget, "calibration": key,
    }
    if edge_cost == "local":
        params["preview"] = True
    params["graph_solutions"] = graph_solutions_to_params(all_graph_solutions(costs, objective))
    schedule = Schedule(steps, compute, model=family, sampler=sampler_name, scheduler=scheduler,
                        source="reference", params=params, metrics=metrics)
    text = _summary(schedule, edge_cost, objective, matrix, stats, errors, uniform_errors, measured_evals, path)
    if recovery:
        text += f"\nrecovery: {recovery}"
    image = cost_heatmap(costs, compute)
    return ReferenceResult(schedule, costs, matrix, image, text, path, stats, measured_evals, measured_runs)


def _summary(schedule: Schedule, edge_cost: str, objective: str, matrix: CostMatrix, stats: CalibrationStats,
             errors, uniform_errors, measured_evals: int, path: Path) -> str:
    label = "global" if edge_cost == "global" else "local (PREVIEW: assumes errors add; use global for a real reference)"
    lines = [
        f"OTCache Reference K={schedule.budget}/N={schedule.steps} ({schedule.speedup:.2f}x): {schedule}",
        f"edge cost: {label}; objective: {objective}; max_skip {matrix.max_skip}; seeds {matrix.seeds}",
    ]
    if errors is not None:
        lines.append(f"final-latent error ({ERROR_METRIC}) on the calibration seeds: {np.mean(errors):.4g} "
                     f"(uniform schedule of the same budget: {np.mean(uniform_errors):.4g})")
    total_evals = int(matrix.info.get("evaluations", 0))
    total_seconds = float(matrix.info.get("seconds", 0.0))
    if stats.runs:
        lines.append(f"calibration: {stats.evaluations} evaluations in {stats.runs} runs, {stats.seconds:.1f} s now "
                     f"({total_evals} evaluations, {total_seconds:.1f} s in all)")
    else:
        lines.append(f"calibration: cached, no sampling ({total_evals} evaluations, {total_seconds:.1f} s when made)")
    if measured_evals:
        lines.append(f"measuring the schedule: {measured_evals} evaluations")
    lines.append(f"cost matrix: {path}")
    return "\n".join(lines)
