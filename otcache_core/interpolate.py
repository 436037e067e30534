"""Optimal-transport interpolation of caching schedules (OTCache stage 3, docs/design.md section 5).

Given a careful *reference* schedule (budget ``K_r``) and an extreme *anchor*
(budget ``K_a < K_r``) over the same N steps, predict a schedule for any budget
``K`` in ``[K_a, N]``.

Each schedule is a distribution of compute on normalized time [0, 1], represented by
its quantile function Q (see :mod:`.warp`). In one dimension the Wasserstein-2
optimal transport between two distributions is the monotone rearrangement, and the
W2 geodesic (McCann's displacement interpolation) is the pointwise average of their
quantile functions:

.. math::

    Q_\\lambda(u) = (1 - \\lambda)\\, Q_0(u) + \\lambda\\, Q_1(u),
    \\qquad \\lambda \\in [0, 1],\\ u \\in [0, 1].

The policy path is piecewise, full compute -> reference -> anchor:

.. math::

    K_r \\le K \\le N:\\quad Q_0 = \\mathrm{id},\\ Q_1 = Q_r,\\
        \\lambda = \\frac{N - K}{N - K_r}                                 \\\\
    K_a \\le K < K_r:\\quad Q_0 = Q_r,\\ Q_1 = Q_a,\\
        \\lambda = \\frac{K_r - K}{K_r - K_a}

(``mapping="linear"``). With ``mapping="log"`` lambda is linear in ``log K`` instead,
``lambda = (log N - log K) / (log N - log K_r)`` and
``lambda = (log K_r - log K) / (log K_r - log K_a)``: same endpoints, but since
``-log K`` is convex this lambda lies below the linear one inside each segment, so the
result stays nearer the larger-budget end (full compute, resp. the reference) for
longer and moves toward the anchor mostly at the lowest budgets.

The warp ``Q_lambda`` is discretized at budget K (:func:`.warp.schedule_from_warp`):
``p_k = Q_lambda(k / (K-1)) (N-1)``, rounded half up, then repaired to exactly K
distinct increasing steps containing 0 and N-1. The endpoints are exact:
``K = N`` gives full compute (lambda = 0: the identity warp), ``K = K_r`` the reference
(lambda = 1 on the first segment: ``Q_r``) and ``K = K_a`` the anchor (lambda = 1 on the
second: ``Q_a``), because a schedule's own warp discretized at its own budget
reproduces it exactly.

Step counts: the reference is the carefully calibrated schedule, so its N is the
interpolation's N. An anchor with a different N is resampled to the reference's N
(:func:`.warp.resample`, keeping its warp and speedup) and the result's
``params["note"]`` says so. With ``steps=N'`` both are resampled to N' first and the
budget refers to N'.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .schedule import Schedule, ScheduleError, as_integer, as_step_count
from .warp import Warp, mix_warps, resample, schedule_from_warp, warp

MAPPINGS: tuple[str, ...] = ("linear", "log")


def interpolation_weight(
    budget: int, reference_budget: int, anchor_budget: int, steps: int, mapping: str = "linear"
) -> tuple[str, float]:
    """The path segment (``"full-reference"`` or ``"reference-anchor"``) and lambda for K.

    See the module docstring for the formulas. ``K = K_r`` lies on the first segment
    with lambda = 1. Assumes ``K_a <= K_r <= N`` and ``K_a <= K <= N``.
    """
    if mapping not in MAPPINGS:
        raise ScheduleError(f"mapping must be one of {', '.join(MAPPINGS)}; got {mapping!r}")
    scale = math.log if mapping == "log" else float
    if budget >= reference_budget:
        if steps == reference_budget:  # the reference is full compute: a point, not a segment
            return "full-reference", 1.0
        return "full-reference", (scale(steps) - scale(budget)) / (scale(steps) - scale(reference_budget))
    return "reference-anchor", (scale(reference_budget) - scale(budget)) / (
        scale(reference_budget) - scale(anchor_budget)
    )


def budget_for_speedup(steps: int, speedup: float) -> int:
    """Budget K giving about ``speedup`` at N steps: ``round(N / speedup)`` (ties up), in [2, N]."""
    n = as_step_count(steps)
    if isinstance(speedup, bool) or not isinstance(speedup, numbers.Real) or not math.isfinite(speedup):
        raise ScheduleError(f"speedup must be a finite number >= 1; got {speedup!r}")
    if speedup < 1.0:
        raise ScheduleError(f"speedup must be at least 1 (1 = compute every step); got {speedup}")
    return min(max(math.floor(n / speedup + 0.5), 2), n)


def speedup_for_budget(steps: int, budget: int) -> float:
    """Ideal speedup N / K of budget K at N steps."""
    n = as_step_count(steps)
    k_total = as_integer(budget, "budget")
    if not 2 <= k_total <= n:
        raise ScheduleError(f"budget {k_total} is out of range for {n} steps (valid 2..{n})")
    return n / k_total


def _prepare(
    reference: Schedule, anchor: Schedule, steps: int | None
) -> tuple[Schedule, Schedule, list[str]]:
    """Validate the pair and bring both to one step count; return notes on what changed."""
    for name, value in (("reference", reference), ("anchor", anchor)):
        if not isinstance(value, Schedule):
            raise ScheduleError(f"the {name} must be a Schedule; got {type(value).__name__}")
    notes: list[str] = []
    if anchor.steps != reference.steps:
        notes.append(
            f"anchor resampled from {anchor.steps} to the reference's {reference.steps} steps "
            f"(budget {anchor.budget} -> {resample(anchor, reference.steps).budget})"
        )
        anchor = resample(anchor, reference.steps)
    if anchor.budget >= reference.budget:
        raise ScheduleError(
            f"the anchor's budget ({anchor.budget} of {anchor.steps} steps) must be below the "
            f"reference's ({reference.budget}); swap them if they are the wrong way round, or "
            "choose an anchor with fewer computed steps"
        )
    if steps is not None:
        n_new = as_step_count(steps)
        if n_new != reference.steps:
            notes.append(
                f"reference and anchor resampled from {reference.steps} to {n_new} steps "
                f"(budgets {reference.budget} -> {resample(reference, n_new).budget}, "
                f"{anchor.budget} -> {resample(anchor, n_new).budget})"
            )
            reference, anchor = resample(reference, n_new), resample(anchor, n_new)
    return reference, anchor, notes


def budget_range(reference: Schedule, anchor: Schedule, steps: int | None = None) -> tuple[int, int]:
    """The budgets ``(K_a, N)`` that :func:`interpolate` accepts for this pair (after resampling)."""
    reference, anchor, _ = _prepare(reference, anchor, steps)
    return anchor.budget, reference.steps


def interpolate(
    reference: Schedule,
    anchor: Schedule,
    budget: int,
    *,
    mapping: str = "linear",
    steps: int | None = None,
) -> Schedule:
    """The schedule with exactly ``budget`` computed steps on the full -> reference -> anchor path.

    ``budget`` must lie in ``[K_anchor, N]``. ``steps`` (the sampler's N), when given,
    resamples reference and anchor to it first; the budget then refers to that N.
    The result has ``source="interpolated"``, the reference's model, sampler and
    scheduler (the anchor's model if the reference has none), and ``params`` with
    ``lambda``, ``segment``, ``mapping``, ``reference`` and ``anchor`` (compact strings
    at the interpolation's N) and, when something was resampled, ``note``.
    """
    if mapping not in MAPPINGS:
        raise ScheduleError(f"mapping must be one of {', '.join(MAPPINGS)}; got {mapping!r}")
    reference, anchor, notes = _prepare(reference, anchor, steps)
    n = reference.steps
    k_total = as_integer(budget, "budget")
    k_ref, k_anchor = reference.budget, anchor.budget
    if not k_anchor <= k_total <= n:
        raise ScheduleError(
            f"budget {k_total} is out of range: with reference budget {k_ref} and anchor budget "
            f"{k_anchor} at {n} steps, choose a budget in [{k_anchor}, {n}] "
            f"(speedup 1.00x to {n / k_anchor:.2f}x)"
        )
    segment, weight = interpolation_weight(k_total, k_ref, k_anchor, n, mapping)
    if segment == "full-reference":
        path: tuple[Warp, Warp] = (Warp.identity(), warp(reference))
    else:
        path = (warp(reference), warp(anchor))
    params: dict[str, Any] = {
        "lambda": weight,
        "segment": segment,
        "mapping": mapping,
        "reference": str(reference),
        "anchor": str(anchor),
    }
    if notes:
        params["note"] = "; ".join(notes)
    return schedule_from_warp(
        mix_warps(path[0], path[1], weight),
        k_total,
        n,
        model=reference.model or anchor.model,
        sampler=reference.sampler,
        scheduler=reference.scheduler,
        source="interpolated",
        params=params,
    )
