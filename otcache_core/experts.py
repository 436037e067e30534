"""One schedule over two samplers: Wan 2.2's high-noise and low-noise experts.

Wan 2.2 samples N steps in two KSamplerAdvanced passes over one sigma schedule: the
high-noise expert runs steps ``[0, s)``, the low-noise expert ``[s, N)``. Each expert is a
different model, so it has its own Cached Model and its own cache, and the second pass
starts with an empty one: its first step ``s`` must compute. A schedule that skips ``s``
would then compute K + 1 steps over both passes.

:func:`split_for_experts` moves the nearest interior computed step onto ``s`` (K stays K),
so that the two passes together compute exactly the schedule's K of N steps; the runtime
finds each pass's slice by its sigmas (``cache_runtime.pass_offset``).
"""
from __future__ import annotations

from .schedule import Schedule, ScheduleError, as_integer


def split_for_experts(schedule: Schedule, switch_step: int) -> Schedule:
    """``schedule`` with step ``switch_step`` (the second pass's first step) computed, K unchanged.

    If ``switch_step`` is skipped, the computed interior step nearest to it moves there
    (the earlier one on a tie). With no interior computed step to move (K = 2), the step
    is added and K becomes 3, which the schedule's params say.
    """
    n = schedule.steps
    s = as_integer(switch_step, "switch_step", low=1)
    if s >= n:
        raise ScheduleError(f"switch_step {s} must be below the schedule's {n} steps: the low-noise expert "
                            "runs steps switch_step..N-1 (use the first KSamplerAdvanced's end_at_step)")
    compute = list(schedule.compute)
    params = {**schedule.params, "switch_step": s}
    if s in compute:
        return schedule.with_metadata(params=params)
    movable = [c for c in compute if 0 < c < n - 1]
    if movable:
        nearest = min(movable, key=lambda c: (abs(c - s), c))
        compute = sorted({*compute, s} - {nearest})
        params["moved_step"] = [nearest, s]
    else:
        compute = sorted({*compute, s})
        params["added_step"] = s
    return Schedule(n, compute, model=schedule.model, sampler=schedule.sampler, scheduler=schedule.scheduler,
                    source=schedule.source, params=params, metrics=schedule.metrics)


def expert_budgets(schedule: Schedule, switch_step: int) -> tuple[int, int]:
    """Computed steps of the high-noise pass ``[0, s)`` and of the low-noise pass ``[s, N)``."""
    mask = schedule.mask
    return sum(mask[:switch_step]), sum(mask[switch_step:])
