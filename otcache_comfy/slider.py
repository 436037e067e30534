"""The Budget Slider's schedule for a speedup: the node and the live preview route share it.

Between full compute and the reference the schedule moves from computing every step to
the reference; below, it follows the OT path between reference and anchor
(:func:`otcache_core.interpolate.interpolate`), or the anchor's measured budget path
when it was measured for this reference and step count (:mod:`otcache_core.budget_path`).
"""
from __future__ import annotations

import dataclasses
import math

from ..otcache_core.budget_path import path_for, path_schedule
from ..otcache_core.interpolate import budget_for_speedup, budget_range, interpolate
from ..otcache_core.schedule import Schedule, ScheduleError

SPEEDUP_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class SliderResult:
    schedule: Schedule
    text: str  # what the node shows
    curve: dict | None  # the measured quality-versus-speed curve (None without a measured path)
    max_speedup: float
    min_budget: int


def _floor2(value: float) -> str:
    """``value`` rounded down to 2 decimals, so a stated maximum is always allowed."""
    return f"{math.floor(value * 100 + 1e-9) / 100:.2f}"


def describe(schedule: Schedule) -> str:
    """Two lines: the compact form, then budget, steps and ideal speedup."""
    return (
        f"{schedule}\n"
        f"K = {schedule.budget} of N = {schedule.steps} steps computed, "
        f"predicted speedup {schedule.speedup:.2f}x"
    )


def curve_payload(path, budget: int) -> dict:
    """What the frontend draws under the slider: objective per measured budget, and where the slider is."""
    return {"metric": path.metric, "steps": path.steps, "budget": budget, "points": path.curve()}


def _on_path(path, plain: Schedule, budget: int) -> Schedule:
    """The measured path's schedule at ``budget`` (same metadata as the plain OT one, params saying which)."""
    knot = path.knot_at(budget)
    if knot is not None:
        how = f"measured knot at K={budget}: {path.metric} {knot.objective:.4g} ({knot.origin})"
    elif budget > path.knots[-1].budget:
        how = f"OT from full compute to the measured knot at K={path.knots[-1].budget}"
    else:
        lower = max(k.budget for k in path.knots if k.budget < budget)
        upper = min(k.budget for k in path.knots if k.budget > budget)
        how = f"OT between the measured knots at K={lower} and K={upper}"
    params = {key: plain.params[key] for key in ("mapping", "reference", "anchor", "note") if key in plain.params}
    params.update(path=how, segment="measured path", **({"objective": knot.objective} if knot else {}))
    return path_schedule(path, budget, model=plain.model, sampler=plain.sampler, scheduler=plain.scheduler,
                         source="interpolated", params=params)


def slider_schedule(reference: Schedule, anchor: Schedule, speedup, steps: int = 0,
                    mapping: str = "linear") -> SliderResult:
    """The schedule at ``speedup`` between ``reference`` and ``anchor`` (``steps`` 0: the reference's)."""
    n_wanted = None if not steps else steps
    anchor_budget, n = budget_range(reference, anchor, n_wanted)
    max_speedup = n / anchor_budget
    if not isinstance(speedup, (int, float)) or isinstance(speedup, bool) or not math.isfinite(speedup):
        raise ScheduleError(f"speedup must be a number; got {speedup!r}")
    if speedup < 1.0 - SPEEDUP_TOLERANCE or speedup > max_speedup + SPEEDUP_TOLERANCE:
        resampled = f", at {n} steps" if n != anchor.steps else ""
        raise ScheduleError(
            f"speedup {speedup:g} is out of range: choose 1.00 .. {_floor2(max_speedup)} "
            f"(1.00 computes every step; the anchor's speedup is {max_speedup:.3f}x, budget "
            f"{anchor_budget} of {n} steps{resampled}). For more speed, use an anchor with fewer computed steps."
        )
    budget = budget_for_speedup(n, min(max(float(speedup), 1.0), max_speedup))
    schedule = interpolate(reference, anchor, budget, mapping=mapping, steps=n_wanted)
    path = path_for(reference, anchor, n)
    if path is not None:
        schedule = _on_path(path, schedule, budget)
    schedule = schedule.with_metadata(params={**schedule.params, "requested_speedup": float(speedup)})
    curve = curve_payload(path, budget) if path is not None else None
    return SliderResult(schedule, _slider_text(schedule, anchor), curve, max_speedup, anchor_budget)


def _slider_text(schedule: Schedule, anchor: Schedule) -> str:
    params = schedule.params
    if "path" in params:
        lines = [describe(schedule), params["path"]]
    else:
        segment = "full -> reference" if params["segment"] == "full-reference" else "reference -> anchor"
        lines = [describe(schedule), f"lambda = {params['lambda']:.3f} ({segment}, {params['mapping']})"]
        if anchor.params.get("path") is not None:
            lines.append("the anchor's measured path is not used: it was measured for another reference or "
                         f"step count (set steps to {anchor.steps} and connect the reference it was searched with)")
    if "note" in params:
        lines.append(f"note: {params['note']}")
    return "\n".join(lines)
