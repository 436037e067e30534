"""Edges split at their end step: one arrival run per start step, then tails batched by end step.

An edge ``i -> j`` run whole (``calibration.tail_schedule``) computes step ``i``, reuses
it to ``j - 1`` and computes ``j .. N-1``. For a sampler whose state is only the latent
(:data:`.calibration.EXACT_REPLAY_SAMPLERS`) the same run splits at ``j``:

- the *arrival run* from ``x_i`` computes step ``i``, reuses it, and stops on reaching
  ``i + W`` (:func:`arrive`): one evaluation gives the latent every edge from ``i``
  arrives with;
- the *tail* from that latent is plain full compute over ``sigmas[j:]``, the same steps
  for every edge ending at ``j`` (and every seed), so tails run as one batch of up to
  ``tail_batch`` latents (:func:`run_tails`): one model call per step for the batch.

Used by the ``fast`` edge costs (arrival errors, and exact tails on a few growth edges)
and by ``global`` when ``tail_batch > 1``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..otcache_core.edge_costs import arrival_key, error
from ..otcache_core.schedule import Schedule


@dataclasses.dataclass(frozen=True)
class Member:
    """One edge of one seed whose tail is to be run."""

    seed_index: int
    i: int
    j: int


def arrive(run, s: int, i: int, stop: int, cached: bool = True):
    """The arrival run from seed ``s``'s ``x_i`` to ``stop``: latents arriving at ``i .. stop`` (sampler space).

    Cached: computes step ``i`` only and reuses it (one evaluation). Uncached: the same steps
    in full compute (the reference for samplers that do not replay exactly).
    """
    setup, trajectory = run.setup, run.trajectories[s]
    steps = stop - i + 1
    schedule = Schedule(steps, (0, steps - 1)) if cached else None
    result = setup.sample(run.seed_value(s), schedule, run.mode, start_step=i, start_x=trajectory.xs[i],
                              record=True, stop_step=stop)
    run.account(result)
    return result.xs


def arrival_pass(run, s: int, keep: set[tuple[int, int]]) -> None:
    """Seed ``s``'s arrival runs from every start step; ``fast`` stores their arrival errors.

    Keeps in ``run.arrived`` the arriving latents of the edges in ``keep`` (their tails run next).
    """
    matrix, trajectory = run.matrix, run.trajectories[s]
    n, w = matrix.steps, matrix.max_skip
    fast = matrix.edge_cost == "fast"
    arrival = np.full((n, n), np.nan)
    scale = float(torch.linalg.vector_norm(trajectory.xs[-1].double())) or 1.0
    for i in range(n - 2):
        wanted = {j for (i_, j) in keep if i_ == i}
        if not fast and not wanted:
            continue
        run.check_interrupt()
        stop = min(i + w, n - 1)
        xs = arrive(run, s, i, stop)
        if fast:
            reference = trajectory.xs[i:stop + 1] if run.exact else arrive(run, s, i, stop, cached=False)
            for j in range(i + 2, stop + 1):
                arrival[i, j] = float(torch.linalg.vector_norm(xs[j - i].double() - reference[j - i].double())) / scale
        for j in wanted:
            run.arrived[(s, i, j)] = xs[j - i]
    if fast:
        matrix.extras[arrival_key(s)] = torch.from_numpy(arrival)
        run.save(force=True)


def run_tails(run, members: list[Member], batch: int) -> None:
    """Tails of ``members`` (all ending at one step ``j``), ``batch`` at a time; records each edge's cost."""
    setup = run.setup
    j = members[0].j
    per_member = setup.latent_image.shape[0]
    for k in range(0, len(members), batch):
        chunk = members[k:k + batch]
        for m in chunk:  # resumed: the arriving latent is no longer in memory
            if (m.seed_index, m.i, m.j) not in run.arrived:
                stop = min(m.i + run.matrix.max_skip, setup.steps - 1)
                run.arrived[(m.seed_index, m.i, m.j)] = arrive(run, m.seed_index, m.i, stop)[m.j - m.i]
        run.check_interrupt()
        starts = torch.cat([run.arrived.pop((m.seed_index, m.i, m.j)) for m in chunk])
        seeds = [run.seed_value(m.seed_index) for m in chunk]
        result = setup.sample(seeds[0], None, run.mode, start_step=j, start_x=starts, batch_seeds=seeds)
        finals = result.final.split(per_member)
        for m, final in zip(chunk, finals):
            reference = run.tail_reference(m.seed_index, j)
            run.record(m.seed_index, m.i, m.j, error(final, reference))
        run.account(result)
        run.report_edges()
        run.save()


def tails_by_end(pending: list[tuple[int, int, int]]) -> list[list[Member]]:
    """Pending ``(seed_index, i, j)`` grouped by ``j`` (ascending), seeds and starts in order."""
    groups: dict[int, list[Member]] = {}
    for s, i, j in pending:
        groups.setdefault(j, []).append(Member(s, i, j))
    return [sorted(groups[j], key=lambda m: (m.i, m.seed_index)) for j in sorted(groups)]
