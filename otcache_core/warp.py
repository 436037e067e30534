"""Continuous warping representation of schedules (docs/design.md, section 2).

A schedule ``s_0 < s_1 < ... < s_{K-1}`` over N steps is read as a distribution of
compute over normalized time ``t = step / (N - 1)`` in [0, 1]. Its quantile function

.. math::

    Q(u) \\text{ piecewise linear through } \\Bigl(u_k, \\frac{s_k}{N-1}\\Bigr),
    \\qquad u_k = \\frac{k}{K-1},\\quad k = 0, \\dots, K-1,

is a monotone warp of [0, 1] with ``Q(0) = 0`` and ``Q(1) = 1``: where Q is steep the
computed steps are sparse, where it is flat they are dense. The identity warp
``Q(u) = u`` is full compute.

Discretization (:func:`schedule_from_warp`) of a warp Q at budget K and N steps:

.. math::

    p_k = Q(u_k)\\,(N-1), \\qquad r_k = \\lfloor p_k + \\tfrac12 \\rfloor
    \\quad\\text{(ties round up)},

then a forward pass ``s_k = max(r_k, s_{k-1} + 1)`` and a backward pass
``s_k = min(s_k, s_{k+1} - 1)`` with ``s_0 = 0``, ``s_{K-1} = N - 1`` give exactly K
distinct increasing steps. For ``Q = warp(S)`` the targets are ``p_k = s_k`` (up to
float rounding, far below the 1/2 of rounding), so
``schedule_from_warp(warp(S), S.budget, S.steps) == S`` for every schedule S.

Resampling (:func:`resample`) to N' steps keeps Q and scales the budget so the
speedup is kept: ``K' = round(K N' / N)`` clipped to ``[2, N']``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .schedule import (
    Schedule,
    ScheduleError,
    as_integer,
    as_step_count,
    repair_steps,
    round_half_up,
)

WarpFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Warp:
    """A monotone piecewise linear map of [0, 1] onto [0, 1] given by its knots.

    ``knots_u`` strictly increase from 0 to 1; ``knots_q`` do not decrease, from 0 to 1.
    Calling it evaluates the linear interpolation through the knots, vectorized over
    numpy arrays (a Python float in gives a float out); inputs outside [0, 1] are
    clamped to the end values.
    """

    knots_u: tuple[float, ...]
    knots_q: tuple[float, ...]

    def __post_init__(self) -> None:
        u = np.asarray(self.knots_u, dtype=float)
        q = np.asarray(self.knots_q, dtype=float)
        if u.ndim != 1 or q.shape != u.shape or u.size < 2:
            raise ScheduleError(
                f"a warp needs two equally long knot lists with at least 2 knots; got {u.size} and {q.size}"
            )
        if not (np.all(np.isfinite(u)) and np.all(np.isfinite(q))):
            raise ScheduleError("warp knots must be finite numbers")
        if u[0] != 0.0 or u[-1] != 1.0 or np.any(np.diff(u) <= 0):
            raise ScheduleError("warp knot positions must increase strictly from 0 to 1")
        if q[0] != 0.0 or q[-1] != 1.0 or np.any(np.diff(q) < 0):
            raise ScheduleError("warp knot values must not decrease and must run from 0 to 1 (Q(0)=0, Q(1)=1)")
        object.__setattr__(self, "knots_u", tuple(float(x) for x in u))
        object.__setattr__(self, "knots_q", tuple(float(x) for x in q))

    @overload
    def __call__(self, u: float) -> float: ...
    @overload
    def __call__(self, u: np.ndarray) -> np.ndarray: ...

    def __call__(self, u: Any) -> Any:
        values = np.interp(u, self.knots_u, self.knots_q)
        return float(values) if np.ndim(values) == 0 else values

    @classmethod
    def identity(cls) -> Warp:
        """``Q(u) = u``: the warp of full compute at any N."""
        return cls((0.0, 1.0), (0.0, 1.0))


def budget_positions(budget: int) -> np.ndarray:
    """``u_k = k / (K - 1)`` for k = 0..K-1; one formula, so knots and queries agree bit for bit."""
    return np.arange(budget, dtype=float) / (budget - 1)


def warp(schedule: Schedule) -> Warp:
    """The quantile function of a schedule: knots ``(k/(K-1), s_k/(N-1))``."""
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"warp() needs a Schedule; got {type(schedule).__name__}")
    u = budget_positions(schedule.budget)
    q = np.asarray(schedule.compute, dtype=float) / (schedule.steps - 1)
    return Warp(tuple(u), tuple(q))


def w1_steps(a: Schedule, b: Schedule, grid: int = 4001) -> float:
    r"""W1 distance between two schedules' quantile functions, in steps of N.

    :math:`(N - 1) \int_0^1 |Q_a(u) - Q_b(u)| \, du` (trapezoid rule on ``grid`` points);
    0 for equal schedules, and one step when every computed step moves by one.
    """
    u = np.linspace(0.0, 1.0, grid)
    return float(np.trapezoid(np.abs(warp(a)(u) - warp(b)(u)), u) * (a.steps - 1))


def mix_warps(first: Warp, second: Warp, weight: float) -> Warp:
    """The pointwise combination ``(1 - weight) * first + weight * second``, exactly.

    Both warps are linear between the union of their knots, so the combination is
    the piecewise linear warp through the combined values at that union. ``weight``
    must lie in [0, 1] (outside it the result need not be monotone).
    """
    if not 0.0 <= weight <= 1.0:
        raise ScheduleError(f"warp mixing weight must be in [0, 1]; got {weight}")
    u = np.union1d(first.knots_u, second.knots_u)
    q = (1.0 - weight) * np.interp(u, first.knots_u, first.knots_q) + weight * np.interp(
        u, second.knots_u, second.knots_q
    )
    # Guard the end values against float drift so the Warp invariants hold exactly.
    q[0], q[-1] = 0.0, 1.0
    return Warp(tuple(u), tuple(np.maximum.accumulate(q)))


def discretize_targets(targets: Sequence[float], steps: int) -> tuple[int, ...]:
    """Round step targets ``p_k`` (ties up) and repair them to a valid compute tuple."""
    return repair_steps([round_half_up(float(p)) for p in targets], steps)


def schedule_from_warp(q: Warp | WarpFunction, budget: int, steps: int, **metadata: Any) -> Schedule:
    """Discretize a warp Q at budget K over N steps (module docstring has the formulas).

    ``q`` is a :class:`Warp` or any vectorized callable mapping [0, 1] to [0, 1]
    monotonically. ``metadata`` (model, sampler, scheduler, source, params, metrics)
    goes to the resulting :class:`Schedule`.
    """
    n = as_step_count(steps)
    k_total = as_integer(budget, "budget")
    if not 2 <= k_total <= n:
        raise ScheduleError(f"budget {k_total} is out of range for {n} steps (valid 2..{n})")
    values = np.asarray(q(budget_positions(k_total)), dtype=float)
    if values.shape != (k_total,):
        raise ScheduleError(f"the warp returned shape {values.shape} for {k_total} inputs; it must be vectorized")
    if not np.all(np.isfinite(values)):
        raise ScheduleError("the warp returned a non-finite value; it must map [0, 1] to [0, 1]")
    if np.any(np.diff(values) < -1e-12):
        raise ScheduleError("the warp decreases somewhere; a schedule warp must be non-decreasing")
    targets = np.clip(values, 0.0, 1.0) * (n - 1)
    return Schedule(n, discretize_targets(targets, n), **metadata)


def resampled_budget(budget: int, steps: int, new_steps: int) -> int:
    """``K' = round(K N' / N)`` (ties up, exact integers) clipped to ``[2, N']``."""
    k_total = as_integer(budget, "budget")
    n = as_step_count(steps)
    n_new = as_step_count(new_steps, "new step count")
    scaled = (2 * k_total * n_new + n) // (2 * n)  # floor(K N'/N + 1/2)
    return min(max(scaled, 2), n_new)


def resample(schedule: Schedule, steps: int) -> Schedule:
    """The schedule with the same warp Q at another step count N', keeping N/K.

    The budget becomes ``K' = round(K N' / N)`` clipped to ``[2, N']``, so the speedup
    ``N'/K'`` differs from ``N/K`` only by that rounding (K' is within 1/2 of
    ``K N'/N`` unless clipped). Metadata is carried over; ``params`` gains
    ``resampled_from`` (the old N) and ``resampled_budget_from`` (the old K). At the
    same N the schedule is returned unchanged.
    """
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"resample() needs a Schedule; got {type(schedule).__name__}")
    n_new = as_step_count(steps, "new step count")
    if n_new == schedule.steps:
        return schedule
    k_new = resampled_budget(schedule.budget, schedule.steps, n_new)
    params = dict(schedule.params)
    params.setdefault("resampled_from", schedule.steps)
    params.setdefault("resampled_budget_from", schedule.budget)
    return schedule_from_warp(
        warp(schedule),
        k_new,
        n_new,
        model=schedule.model,
        sampler=schedule.sampler,
        scheduler=schedule.scheduler,
        source=schedule.source,
        params=params,
        metrics={},  # metrics were measured on the original steps
    )
