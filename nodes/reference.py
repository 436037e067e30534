"""OTCache Reference: a graph-searched reference schedule from a real calibration run (stage 1).

The node samples like a KSampler (same inputs) to measure the cost of every edge of the
step graph (:mod:`.calibration`, :mod:`..otcache_core.edge_costs`), then picks the best
path with the requested budget (:func:`..otcache_core.graph.best_path`). The cost matrix
is cached on disk, keyed by everything it depends on except the budget and the
objective, so changing those only re-solves the graph (milliseconds, no sampling).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import comfy.samplers
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io

from ..otcache_core.budget_path import graph_solutions_to_params
from ..otcache_core.edge_costs import EDGE_COSTS, ERROR_METRIC, CostMatrix, min_budget, window_costs
from ..otcache_core.graph import OBJECTIVES, GraphSearchError, all_graph_solutions, best_path, path_costs
from ..otcache_core.schedule import Schedule
from .cache_runtime import REUSE_MODES, resolve_reuse
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
from .types import CATEGORY, OTSchedule
from .ui_text import send_node_text

log = logging.getLogger("otcache")

DEFAULT_MAX_SKIP = 5
DEFAULT_SEEDS = 2
HEATMAP_SIZE = 512


# ----------------------------------------------------------------- heatmap (pure numpy)

# viridis, sampled at 9 points; linear interpolation in between
_VIRIDIS = np.array([
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64) / 255.0
_FORBIDDEN = np.array([0.16, 0.16, 0.16])  # inf: outside the window, or i >= j
_FREE = np.array([0.45, 0.45, 0.45])  # cost 0: j = i + 1, nothing skipped
_PATH = np.array([1.0, 1.0, 1.0])
_BAR_GAP, _BAR_WIDTH = 6, 16


def _colormap(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(u).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (u - lo)[..., None]
    return _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac


def heatmap_shape(steps: int, size: int = HEATMAP_SIZE) -> tuple[int, int, int, int]:
    """Shape ``[1, H, W, 3]`` of :func:`cost_heatmap` for ``steps`` steps."""
    cell = max(1, size // steps)
    return (1, steps * cell, steps * cell + _BAR_GAP + _BAR_WIDTH, 3)


def cost_heatmap(costs: np.ndarray, compute: tuple[int, ...] | None = None, size: int = HEATMAP_SIZE) -> torch.Tensor:
    """The cost matrix as a ComfyUI IMAGE ``[1, H, W, 3]`` (0..1), log colour scale, path drawn on top.

    Row i, column j is edge i -> j. Dark grey: forbidden; mid grey: cost 0 (j = i + 1);
    viridis from the smallest (dark) to the largest (yellow) positive cost, log scale.
    The chosen path's edges are framed in white and joined by a white staircase through
    the diagonal (each computed step). The strip on the right is the colour scale.
    """
    c = np.asarray(costs, dtype=np.float64)
    n = c.shape[0]
    cell = max(1, size // n)
    positive = c[np.isfinite(c) & (c > 0)]
    cells = np.empty((n, n, 3))
    cells[:] = _FORBIDDEN
    if positive.size:
        lo, hi = np.log10(positive.min()), np.log10(positive.max())
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (np.log10(c) - lo) / (hi - lo) if hi > lo else np.full_like(c, 0.5)
        colored = np.isfinite(c) & (c > 0)
        cells[colored] = _colormap(u[colored])
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    cells[upper & np.isfinite(c) & (c <= 0)] = _FREE
    cells[~upper] = _FORBIDDEN
    img = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)

    if compute is not None and len(compute) >= 2:
        border = max(1, cell // 8)
        line = max(1, cell // 10)

        def center(k: int) -> int:
            return k * cell + cell // 2

        for a, b in zip(compute, compute[1:]):
            y0, x0 = a * cell, b * cell
            block = img[y0:y0 + cell, x0:x0 + cell]
            block[:border] = _PATH
            block[-border:] = _PATH
            block[:, :border] = _PATH
            block[:, -border:] = _PATH
        # staircase: (a, a) -> right to (a, b) -> down to (b, b) -> ...
        half = line // 2
        for a, b in zip(compute, compute[1:]):
            ya, xa, xb, yb = center(a), center(a), center(b), center(b)
            img[ya - half:ya - half + line, xa:xb + 1] = _PATH
            img[ya:yb + 1, xb - half:xb - half + line] = _PATH

    height = n * cell
    bar = _colormap(np.linspace(1.0, 0.0, height))[:, None, :].repeat(_BAR_WIDTH, axis=1)
    gap = np.zeros((height, _BAR_GAP, 3))
    out = np.concatenate([img, gap, bar], axis=1).astype(np.float32)
    return torch.from_numpy(out)[None]


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


# ----------------------------------------------------------------- the node


class OTCacheReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheReference",
            display_name="OTCache Reference",
            category=CATEGORY,
            description=(
                "Stage 1 of OTCache: finds a caching schedule for this model, prompt and sampler by a graph search "
                "over the sampling steps (LeMiCa). Takes the same inputs as a KSampler; it samples the calibration "
                "seeds to measure what skipping each run of steps costs, then picks the best schedule with the "
                "requested budget. The measurements are saved in the user directory and resume after a cancel; "
                "changing only the budget or objective re-solves instantly."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model, before any OTCache Cached Model node."),
                io.Conditioning.Input("positive", tooltip="The prompt the schedule is calibrated on."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (unused at cfg 1)."),
                io.Latent.Input("latent_image", tooltip="The latent to sample, as for a KSampler (sets the resolution)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                             tooltip=("First calibration seed; the calibration uses seed, seed+1, ... "
                                      "(fixed: a new seed means a new calibration).")),
                io.Int.Input("seeds", default=DEFAULT_SEEDS, min=1, max=64,
                             tooltip="Number of calibration seeds. Costs are averaged over them; the sampling cost grows linearly."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler to calibrate with: use the one you will sample with. Deterministic "
                                       "single-step samplers (euler, heun, dpm_2, ddim) replay exactly; multistep and "
                                       "ancestral/SDE ones are compared with an uncached replay of each tail (more evaluations)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="Scheduler to calibrate with: use the one you will sample with."),
                io.Int.Input("steps", default=20, min=3, max=10000, tooltip="N, the sampling steps of the schedule."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance, as in your KSampler (FLUX: 1)."),
                io.Int.Input("budget", default=0, min=0, max=10000,
                             tooltip="K, the number of steps that run the transformer (0: a conservative N/2). "
                                     "Changing only this re-solves the saved cost matrix without sampling."),
                io.Combo.Input("edge_cost", options=list(EDGE_COSTS), default="global",
                               tooltip="global: sample with each skip segment cached from the recorded latent and "
                                       "measure the final-latent error (LeMiCa; accurate, costs about N x max_skip "
                                       "tail runs per seed). local: a fast PREVIEW from one run per seed that adds up "
                                       "step-wise drift of the model output; it ignores how early errors grow."),
                io.Combo.Input("objective", options=list(OBJECTIVES), default="minimax",
                               tooltip="minimax: smallest worst edge, then second worst, ... (LeMiCa). "
                                       "sum: smallest total edge cost."),
                io.Int.Input("max_skip", default=DEFAULT_MAX_SKIP, min=2, max=64,
                             tooltip="Longest edge j - i: at most max_skip - 1 consecutive steps reuse the cache. "
                                     "The global calibration costs grow linearly with it; the smallest possible "
                                     "budget is ceil((N-1)/max_skip)+1. 5 covers the published FLUX reference gaps."),
                io.Combo.Input("reuse", options=list(REUSE_MODES), default="auto",
                               tooltip="What a skipped step reuses, as in OTCache Cached Model: set both the same so "
                                       "what is measured is what runs."),
                io.Boolean.Input("measure", default=True, advanced=True,
                                 tooltip="Sample the chosen schedule (and the uniform one) on the calibration seeds "
                                         "and report their final-latent error: 2 x seeds runs of K steps, remembered "
                                         "per schedule. Off: only the graph search runs."),
            ],
            outputs=[
                OTSchedule.Output(display_name="schedule", tooltip="The reference schedule, with its measurements."),
                io.Image.Output(display_name="cost_matrix",
                                tooltip="The edge-cost matrix (row i -> column j, log colour scale) with the chosen path in white."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, seeds, sampler_name, scheduler, steps, cfg,
                budget=0, edge_cost="global", objective="minimax", max_skip=DEFAULT_MAX_SKIP, reuse="auto",
                measure=True) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        bar: list = []

        def progress(done: int, total: int) -> None:
            if not bar:
                bar.append(comfy.utils.ProgressBar(total, node_id=node_id))
            bar[0].update_absolute(done, total)  # in a server this is also a cancel point

        last_status = [0.0]

        def status(text: str) -> None:
            now = time.monotonic()
            if now - last_status[0] >= 1.0:  # at most once a second on the node
                last_status[0] = now
                send_node_text(node_id, text)

        result = build_reference(model, positive, negative, latent_image, seed, seeds, sampler_name, scheduler, steps,
                                 cfg, budget, edge_cost, objective, max_skip, reuse, measure, progress=progress,
                                 status=status)
        send_node_text(node_id, result.text)
        log.info(result.text)
        return io.NodeOutput(result.schedule, result.image,
                             ui={"text": [result.text], "otcache_schedule": [result.schedule.to_dict()]})
