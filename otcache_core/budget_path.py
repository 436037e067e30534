r"""The budget path: measured knots between reference and anchor, OT interpolation between knots.

Plain stage 3 (:func:`.interpolate.interpolate`) predicts every budget between the
reference (budget :math:`K_r`) and the anchor (:math:`K_a`) from those two schedules
alone. Calibration knows more than that. The stage-1 cost matrix gives the graph
search's solution :math:`G_K` at every budget for free, and the stage-2 objective
:math:`f` (end-to-end perceptual error on the calibration seeds) can score any
schedule. So each budget can be *measured* instead of predicted:

.. math::

    S^*_K = \arg\min_{S \in C_K} f(S), \qquad
    C_K = \{\, I_K,\ G_K,\ U_K \,\} \cup \mathcal{N}(\text{best so far}),

where :math:`I_K` is the OT interpolation of reference and anchor at :math:`K` (the
reference and the anchor themselves at their own budgets), :math:`U_K` the uniform
schedule (the baseline any user has without calibration; measured on the tiny models it
beats the graph search at some mild budgets, so the path must be able to pick it), and
:math:`\mathcal N(S)` the one-step neighbours of :math:`S` (one inner computed step moved
by one, :func:`neighbours`), explored by first-improvement hill climbing for at most
``neighbour_evals`` scores per budget (default 0: with the few calibration seeds a user
runs, moves that win on them lost up to 2 dB on held-out prompts; measured on the tiny
models, ``benchmarks/knot_rules.py``). Between the anchor and the reference the graph
solution is kept unless another candidate beats it by more than the calibration noise
(:func:`clearly_better`: one standard error of the paired per-sample differences, when
the objective returns per-sample values): measured, an OT schedule that beat :math:`G_K`
by 0.02 dB on 4 calibration samples lost 2 dB held out. At the two ends the reference and
the anchor are kept the same way: on the demo's 2 calibration seeds a uniform schedule
scored better than the reference on their mean and was 9 dB worse on the 4 seeds after them. A knot is
:math:`(K, S^*_K, f(S^*_K))`; between the ends it scores no worse on the calibration
objective than :math:`G_K` and, beyond that noise, than :math:`I_K` and :math:`U_K`. Between knots the
path is OT interpolation of the two neighbouring knots (:func:`path_schedule`); above
:math:`K_r` it runs from full compute to the knot at :math:`K_r`, exactly as plain stage 3
runs to the reference.

A path travels inside the anchor schedule (``params["path"]``, :func:`path_to_params`),
so a saved workflow or schedule file carries it; the Budget Slider uses it when its
reference is the one the path was measured for, and plain OT otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .interpolate import interpolate
from .schedule import Schedule, ScheduleError
from .warp import Warp, mix_warps, schedule_from_warp, warp

Objective = Callable[[Schedule], "float | Sequence[float]"]  # a mean, or one value per calibration sample
PATH_FORMAT = "otcache.budget_path"


@dataclass(frozen=True)
class Knot:
    """A measured point of the path: the best schedule found at ``budget`` and its objective."""

    budget: int
    schedule: Schedule
    objective: float
    origin: str  # "interpolated", "graph", "uniform", "reference", "anchor", plus "+neighbours" when hill climbing won


@dataclass(frozen=True)
class BudgetPath:
    """Knots by budget (ascending), the reference they were measured for, and what it cost."""

    reference: Schedule
    knots: tuple[Knot, ...]
    metric: str
    scored: int  # distinct schedules scored while building it (each costs K evaluations per seed)

    @property
    def steps(self) -> int:
        return self.reference.steps

    def knot_at(self, budget: int) -> Knot | None:
        return next((k for k in self.knots if k.budget == budget), None)

    def curve(self) -> list[dict[str, Any]]:
        """Objective against speedup at every knot, for drawing the trade-off on the slider."""
        return [{"budget": k.budget, "speedup": self.steps / k.budget, "objective": k.objective, "origin": k.origin}
                for k in self.knots]


def neighbours(schedule: Schedule) -> list[Schedule]:
    """Every schedule with one inner computed step moved by one step (same budget, 0 and N-1 fixed)."""
    steps, compute = schedule.steps, list(schedule.compute)
    taken = set(compute)
    out = []
    for index in range(1, len(compute) - 1):
        for delta in (-1, 1):
            moved = compute[index] + delta
            if 0 < moved < steps - 1 and moved not in taken:
                out.append(Schedule(steps, sorted(compute[:index] + [moved] + compute[index + 1:])))
    return out


class _Scores:
    """The objective with memory: a schedule is scored once, however often it is proposed.

    The objective returns the mean over the calibration samples, or the per-sample values
    (kept in ``samples``, for :func:`clearly_better`); ``known`` takes either form too.
    """

    def __init__(self, objective: Objective, known: Mapping[str, "float | Sequence[float]"] | None = None):
        self.objective = objective
        self.values: dict[str, float] = {}
        self.samples: dict[str, tuple[float, ...]] = {}
        for key, value in (known or {}).items():
            self._keep(key, value)
        self.calls = 0

    def _keep(self, key: str, value: "float | Sequence[float]") -> None:
        # Per-sample values come as any 1-D container (list, tuple, numpy array, tensor).
        several = isinstance(value, Sequence) or getattr(value, "ndim", 0) >= 1
        per_sample = tuple(float(v) for v in value) if several else (float(value),)
        if not per_sample or not all(math.isfinite(v) for v in per_sample):
            raise ScheduleError(f"the objective returned {value} for {key}; it must be finite")
        self.values[key] = math.fsum(per_sample) / len(per_sample)
        if several:
            self.samples[key] = per_sample

    def __call__(self, schedule: Schedule) -> float:
        key = str(schedule)
        if key not in self.values:
            self._keep(key, self.objective(schedule))
            self.calls += 1
        return self.values[key]


def clearly_better(scores: _Scores, other: Schedule, base: Schedule) -> bool:
    r"""``other`` scores lower than ``base`` by more than the calibration noise.

    With per-sample scores :math:`d_i = f_i(\text{other}) - f_i(\text{base})` on :math:`n \ge 2`
    shared samples: :math:`\bar d + s_d/\sqrt{n} < 0` (one standard error of the paired
    difference). Without them, a lower mean.
    """
    if scores(other) >= scores(base):
        return False
    a, b = scores.samples.get(str(other)), scores.samples.get(str(base))
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return True
    return lower_beyond_noise(a, b)


def lower_beyond_noise(a: Sequence[float], b: Sequence[float]) -> bool:
    """Paired samples: mean(a - b) plus one standard error of it is below zero (n >= 2)."""
    diff = [x - y for x, y in zip(a, b)]
    mean = math.fsum(diff) / len(diff)
    spread = math.sqrt(math.fsum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff))
    return mean + spread < 0


def best_at_budget(scores: _Scores, candidates: Sequence[tuple[str, Schedule]], neighbour_evals: int,
                   keep: str | None = None) -> Knot:
    """The knot at one budget: the best candidate, then first-improvement hill climbing over neighbours.

    ``keep``: the candidate of that origin stays unless another is :func:`clearly_better` than it.
    """
    kept = dict(candidates).get(keep)
    if kept is not None:
        candidates = [c for c in candidates if c[0] == keep or clearly_better(scores, c[1], kept)]
    best_origin, best = min(candidates, key=lambda c: (scores(c[1]), c[0]))
    value = scores(best)
    spent, improved = 0, False
    while spent < neighbour_evals:
        step = None
        for near in neighbours(best):
            if spent >= neighbour_evals:
                break
            if str(near) not in scores.values:
                spent += 1
            if scores(near) < value:
                step = near
                break
        if step is None:
            break
        best, value, improved = step, scores(step), True
    return Knot(best.budget, best, value, best_origin + ("+neighbours" if improved else ""))


def build_path(objective: Objective, reference: Schedule, anchor: Schedule,
               graph_solutions: Mapping[int, Schedule] | None = None, *, neighbour_evals: int = 0,
               known: Mapping[str, "float | Sequence[float]"] | None = None, metric: str = "",
               on_knot: Callable[[Knot, int, int], None] | None = None) -> BudgetPath:
    """Measure a knot at every budget from the anchor's to the reference's (see the module docstring).

    ``graph_solutions`` maps budgets to the graph search's schedules (from the reference's
    cost matrix); ``known`` maps compact schedules to objective values already measured
    (the anchor study's trials), which cost nothing again. ``on_knot(knot, done, total)``
    reports progress. Reference and anchor must share N.
    """
    if anchor.steps != reference.steps:
        raise ScheduleError(f"the anchor has {anchor.steps} steps, the reference {reference.steps}; resample first")
    if not anchor.budget < reference.budget:
        raise ScheduleError(f"the anchor's budget {anchor.budget} must be below the reference's {reference.budget}")
    graph = {int(k): s for k, s in (graph_solutions or {}).items() if s.steps == reference.steps}
    scores = _Scores(objective, known)
    budgets = list(range(anchor.budget, reference.budget + 1))
    knots = []
    for done, budget in enumerate(budgets, 1):
        if budget == anchor.budget:
            candidates = [("anchor", anchor)]
        elif budget == reference.budget:
            candidates = [("reference", reference)]
        else:
            candidates = [("interpolated", interpolate(reference, anchor, budget).with_metadata(params={}))]
        inside = anchor.budget < budget < reference.budget
        # At the ends the graph solution is usually the reference or anchor itself: it keeps that name.
        if budget in graph and (inside or graph[budget] != candidates[0][1]):
            candidates.append(("graph", graph[budget]))
        candidates.append(("uniform", Schedule.uniform(reference.steps, budget)))
        # The graph solution between the ends, the reference and the anchor at theirs.
        knot = best_at_budget(scores, candidates, neighbour_evals, keep="graph" if inside else candidates[0][0])
        knots.append(Knot(knot.budget, knot.schedule.with_metadata(source="interpolated", params={}, metrics={}),
                          knot.objective, knot.origin))
        if on_knot is not None:
            on_knot(knots[-1], done, len(budgets))
    return BudgetPath(reference, tuple(knots), metric, scores.calls)


def path_schedule(path: BudgetPath, budget: int, **metadata: Any) -> Schedule:
    """The path's schedule at ``budget``: a knot exactly, OT between neighbouring knots, or full -> top knot."""
    n = path.steps
    lowest, top = path.knots[0], path.knots[-1]
    if not lowest.budget <= budget <= n:
        raise ScheduleError(f"budget {budget} is out of range: the path covers [{lowest.budget}, {n}] at {n} steps")
    knot = path.knot_at(budget)
    if knot is not None:
        return knot.schedule.with_metadata(**metadata)
    if budget > top.budget:  # full compute -> the top knot, as plain stage 3 runs to the reference
        weight = (n - budget) / (n - top.budget)
        return schedule_from_warp(mix_warps(Warp.identity(), warp(top.schedule), weight), budget, n, **metadata)
    below = max((k for k in path.knots if k.budget < budget), key=lambda k: k.budget)
    above = min((k for k in path.knots if k.budget > budget), key=lambda k: k.budget)
    weight = (above.budget - budget) / (above.budget - below.budget)
    return schedule_from_warp(mix_warps(warp(above.schedule), warp(below.schedule), weight), budget, n, **metadata)


# ----------------------------------------------------------------- travelling inside a schedule


def path_to_params(path: BudgetPath) -> dict[str, Any]:
    """The JSON form of a path, for ``anchor.params["path"]``."""
    return {"format": PATH_FORMAT, "version": 1, "reference": str(path.reference), "metric": path.metric,
            "scored": path.scored,
            "knots": [[k.budget, str(k.schedule), k.objective, k.origin] for k in path.knots]}


def path_from_params(params: Mapping[str, Any], reference: Schedule) -> BudgetPath | None:
    """The path stored in a schedule's params when it was measured for ``reference``; else None."""
    data = params.get("path") if isinstance(params, Mapping) else None
    if not isinstance(data, Mapping) or data.get("format") != PATH_FORMAT or data.get("reference") != str(reference):
        return None
    try:
        knots = tuple(Knot(int(b), Schedule.parse(s, source="interpolated"), float(v), str(o))
                      for b, s, v, o in data["knots"])
    except (KeyError, TypeError, ValueError):
        return None
    if not knots or any(k.schedule.steps != reference.steps or k.schedule.budget != k.budget for k in knots):
        return None
    return BudgetPath(reference, tuple(sorted(knots, key=lambda k: k.budget)), str(data.get("metric", "")),
                      int(data.get("scored", 0)))


def path_for(reference: Schedule, anchor: Schedule, steps: int | None = None) -> BudgetPath | None:
    """The measured path the slider can use for this pair at ``steps`` (default: the reference's N), or None.

    A path is measured at the anchor's N, for the reference resampled to it; it applies
    when the slider runs at that N with that reference.
    """
    from .warp import resample

    n = steps or reference.steps
    if anchor.steps != n:
        return None
    reference_n = reference if reference.steps == n else resample(reference, n)
    return path_from_params(anchor.params, reference_n)


def graph_solutions_to_params(solutions: Mapping[int, Schedule]) -> dict[str, str]:
    return {str(k): str(s) for k, s in sorted(solutions.items())}


def graph_solutions_from_params(params: Mapping[str, Any]) -> dict[int, Schedule]:
    """``reference.params["graph_solutions"]`` as {budget: schedule} (empty when absent or unreadable)."""
    data = params.get("graph_solutions") if isinstance(params, Mapping) else None
    if not isinstance(data, Mapping):
        return {}
    out = {}
    for key, text in data.items():
        try:
            out[int(key)] = Schedule.parse(text, source="reference")
        except (TypeError, ValueError):
            continue
    return out
