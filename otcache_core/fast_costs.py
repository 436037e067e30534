r"""Fast global edge costs: the error on arrival, times the measured growth of an error to the end.

The ``global`` cost of an edge :math:`i \to j` (LeMiCa) samples the whole tail: compute
step :math:`i`, reuse its cache on :math:`i+1, \dots, j-1`, compute :math:`j, \dots, N-1`,
and measure the final latent's error. That is about :math:`N - j` evaluations per edge,
:math:`\approx N^2 W / 2` per seed. Split the edge at :math:`j`:

.. math::
    C_{ij} = \frac{\|\Phi_j(\tilde x_j^{(i)}) - \Phi_j(x_j)\|}{\|x_{\mathrm{final}}\|}
           \approx g_j \, a_{ij}, \qquad
    a_{ij} = \frac{\|\tilde x_j^{(i)} - x_j\|}{\|x_{\mathrm{final}}\|}

where :math:`\tilde x_j^{(i)}` is the latent the cached segment arrives with at step
:math:`j`, :math:`x_j` the full run's, and :math:`\Phi_j` the sampler from step :math:`j`
to the end. The *arrival error* :math:`a_{ij}` of every edge from :math:`i` comes from one
run that computes step :math:`i` and reuses it up to :math:`i + W`: one evaluation per
start step, :math:`N` in all. The *growth* :math:`g_j` (how much an error at step
:math:`j` has grown by the end) depends, measured on the tiny FLUX, mostly on :math:`j`
and little on which edge made the error (log-spread 0.02-0.24 within a column). So
:math:`g_j` is measured exactly, with whole tails, on one edge ending at each of a few
steps :math:`j` (:func:`growth_steps`), and interpolated in :math:`\log g` between them
(constant beyond the first and last). Measured edges keep their exact cost.

Cost per seed: :math:`N` (the full run) :math:`+ (N - 2)` (arrivals) :math:`+ \sum (N - j)`
over the measured steps; :func:`growth_stride` picks the sparsest grid that keeps the
total within a share (default 1/10) of the exact calibration's.

**Two designs.** ``growth`` (the first, kept for calibrations saved with it): the middle
edge into each measured step, and :math:`g_j` per column as above. ``surface`` (the
default since): the growth also depends on where the edge *starts* (measured on the tiny
models: a per-column growth leaves a log-spread of 0.12-0.32, a column and a row factor
0.05-0.23), so the log-ratio is fitted as one smooth surface over the edge's
two ends,

.. math::
    \log \frac{C_{ij}}{a_{ij}} \approx \sum_{a + b \le 2} \beta_{ab}\, P_a(u_i) P_b(v_j),
    \qquad u_i = 2i/N - 1,\ v_j = 2j/N - 1,

(:math:`P_a` Legendre polynomials; ridge least squares on the measured edges, clipped to
their range), and the measured edges vary in length from column to column
(:func:`surface_edge`) so that rows and columns can be told apart. Same evaluations as
``growth``.

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import math

import numpy as np

from .edge_costs import EdgeCostError, edge_evaluations, window_edges

DEFAULT_SHARE = 0.1  # the fast calibration's evaluations, at most this share of the exact one's
DESIGNS = ("growth", "surface")  # which edges are measured and how the rest are estimated (module docstring)
DEFAULT_DESIGN = "surface"  # new fast calibrations; a saved one without a design is "growth"
SURFACE_DEGREE = 2  # total degree of the log-ratio surface: 6 coefficients
SURFACE_RIDGE = 1e-3
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # the surface design's low-discrepancy step (surface_edge)


def exact_evaluations(steps: int, max_skip: int) -> int:
    """Evaluations per seed of the exact ``global`` calibration: the full run and every edge's tail."""
    return steps + sum(edge_evaluations(steps, i, j) for i, j in window_edges(steps, max_skip))


def growth_steps(steps: int, stride: int) -> list[int]:
    """The steps ``j`` whose growth is measured: ``N-1, N-1-stride, ...`` down to 2, and 2 itself."""
    if steps < 3:
        return []
    js = list(range(steps - 1, 1, -max(1, int(stride))))
    if js[-1] != 2:
        js.append(2)
    return sorted(js)


def fast_evaluations(steps: int, max_skip: int, stride: int) -> int:
    """Evaluations per seed of the fast calibration with this growth grid (replay-exact samplers)."""
    return steps + max(steps - 2, 0) + sum(steps - j for j in growth_steps(steps, stride))


def growth_stride(steps: int, max_skip: int, share: float = DEFAULT_SHARE) -> int:
    """The densest growth grid (smallest stride) whose total stays within ``share`` of the exact calibration.

    When even the sparsest grid (only steps 2 and N-1) is over the share, that grid is used:
    the window is then so small that the exact calibration is cheap anyway.
    """
    exact = exact_evaluations(steps, max_skip)
    for stride in range(1, steps):
        if fast_evaluations(steps, max_skip, stride) <= share * exact:
            return stride
    return max(steps - 3, 1)


def _starts_into(j: int, max_skip: int) -> list[int]:
    """The start steps of the window edges that end at ``j``."""
    starts = list(range(max(0, j - max_skip), j - 1))
    if not starts:
        raise EdgeCostError(f"no edge of the window ends at step {j}")
    return starts


def growth_edge(j: int, max_skip: int) -> tuple[int, int]:
    """The edge ending at ``j`` whose tail measures the growth there: the middle of the edges into ``j``."""
    starts = _starts_into(j, max_skip)
    return starts[len(starts) // 2], j


def surface_edge(k: int, j: int, max_skip: int) -> tuple[int, int]:
    """The ``k``-th measured edge of the ``surface`` design, ending at ``j``: its start picked
    among the edges into ``j`` by the golden-ratio sequence ``frac(k * phi)``, so that the
    measured edges take every length, evenly, for any window, and the surface sees rows as
    well as columns."""
    starts = _starts_into(j, max_skip)
    return starts[int(((k * GOLDEN) % 1.0) * len(starts))], j


def growth_edges(steps: int, max_skip: int, share: float = DEFAULT_SHARE,
                 design: str = "growth") -> list[tuple[int, int]]:
    """The edges a fast calibration of ``design`` measures exactly, in run order (by ``j``)."""
    js = growth_steps(steps, growth_stride(steps, max_skip, share))
    if _checked(design) == "growth":
        return [growth_edge(j, max_skip) for j in js]
    return [surface_edge(k, j, max_skip) for k, j in enumerate(js)]


def _checked(design: str) -> str:
    if design not in DESIGNS:
        raise EdgeCostError(f"unknown fast design {design!r}; one of {', '.join(DESIGNS)}")
    return design


def fast_costs(arrival: np.ndarray, exact: np.ndarray, done: np.ndarray, max_skip: int,
               design: str = "growth") -> np.ndarray:
    """One seed's (N, N) cost estimate: exact where measured, ``g_j * a_ij`` elsewhere (the ``growth``
    design; ``design="surface"`` is :func:`surface_costs`).

    ``arrival[i, j]`` is the arrival error of every window edge, ``exact`` and ``done`` the
    exactly measured edges (the growth edges). ``g_j`` is the geometric mean of
    ``exact / arrival`` over the measured edges ending at ``j``, interpolated linearly in
    ``log g`` over ``j`` and held constant beyond the measured range. Non-window entries: 0
    on ``j = i + 1``, inf elsewhere (as :meth:`.edge_costs.CostMatrix.costs`).
    """
    if _checked(design) == "surface":
        return surface_costs(arrival, exact, done, max_skip)
    arrival, exact, done = np.asarray(arrival, float), np.asarray(exact, float), np.asarray(done, bool)
    n = arrival.shape[0]
    logs: dict[int, list[float]] = {}
    for i, j in window_edges(n, max_skip):
        if done[i, j] and arrival[i, j] > 0 and exact[i, j] > 0:
            logs.setdefault(j, []).append(math.log(exact[i, j] / arrival[i, j]))
    if not logs:
        raise EdgeCostError("the fast calibration has no measured growth yet (no exact edge with a positive error)")
    known = sorted(logs)
    log_growth = np.interp(np.arange(n), known, [float(np.mean(logs[j])) for j in known])
    out = np.full((n, n), np.inf)
    for i in range(n - 1):
        out[i, i + 1] = 0.0
    for i, j in window_edges(n, max_skip):
        out[i, j] = exact[i, j] if done[i, j] else math.exp(log_growth[j]) * arrival[i, j]
    return out


def _surface_basis(i: np.ndarray, j: np.ndarray, steps: int, degree: int) -> np.ndarray:
    """``P_a(u) P_b(v)`` for ``a + b <= degree`` at the edges ``(i, j)``: ``[edges, terms]``."""
    from numpy.polynomial import legendre

    u, v = 2.0 * i / steps - 1.0, 2.0 * j / steps - 1.0
    unit = lambda a: [0.0] * a + [1.0]  # noqa: E731  (the coefficients of P_a)
    return np.stack([legendre.legval(u, unit(a)) * legendre.legval(v, unit(b))
                     for a in range(degree + 1) for b in range(degree + 1 - a)], axis=1)


def surface_costs(arrival: np.ndarray, exact: np.ndarray, done: np.ndarray, max_skip: int) -> np.ndarray:
    """One seed's (N, N) cost estimate of the ``surface`` design: exact where measured, elsewhere
    ``a_ij`` times the fitted surface of ``log(exact / arrival)`` (module docstring).

    The degree drops to 1, then 0 (one growth for all edges), while there are fewer than
    two measured edges per coefficient, and the fitted log-ratio is clipped to the range
    measured, so a sparse plan cannot extrapolate wildly. Non-window entries as :func:`fast_costs`.
    """
    arrival, exact, done = np.asarray(arrival, float), np.asarray(exact, float), np.asarray(done, bool)
    n = arrival.shape[0]
    edges = window_edges(n, max_skip)
    known = [(i, j) for i, j in edges if done[i, j] and arrival[i, j] > 0 and exact[i, j] > 0]
    if not known:
        raise EdgeCostError("the fast calibration has no measured growth yet (no exact edge with a positive error)")
    ki, kj = (np.array(e) for e in zip(*known))
    logs = np.log(exact[ki, kj] / arrival[ki, kj])
    degree = next(d for d in (SURFACE_DEGREE, 1, 0) if len(known) >= 2 * (d + 1) * (d + 2) // 2 or d == 0)
    basis = _surface_basis(ki, kj, n, degree)
    coef = np.linalg.solve(basis.T @ basis + SURFACE_RIDGE * np.eye(basis.shape[1]), basis.T @ logs)
    ei, ej = (np.array(e) for e in zip(*edges))
    fitted = np.clip(_surface_basis(ei, ej, n, degree) @ coef, logs.min(), logs.max())
    out = np.full((n, n), np.inf)
    out[np.arange(n - 1), np.arange(1, n)] = 0.0
    out[ei, ej] = np.where(done[ei, ej], exact[ei, ej], np.exp(fitted) * arrival[ei, ej])
    return out
