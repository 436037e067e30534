r"""Stage-1 graph search: the best compute schedule for a cost matrix.

The sampling steps :math:`0, \dots, N-1` are the nodes of a directed acyclic
graph. An edge :math:`i \to j` (:math:`i < j`) means "compute the model at
steps :math:`i` and :math:`j`, reuse step :math:`i`'s cache on steps
:math:`i+1, \dots, j-1`", and costs :math:`C_{ij}` (the error that reuse causes,
measured elsewhere). :math:`C_{ij} = +\infty` forbids the edge, e.g. when
:math:`j - i` exceeds a window :math:`W`; entries with :math:`i \ge j` are
ignored. A path :math:`0 = s_1 < s_2 < \dots < s_K = N-1` is a schedule of
*budget* :math:`K`: the number of nodes, i.e. of steps that run the model. Its
edge costs are :math:`c_m = C_{s_m s_{m+1}}`, :math:`m = 1, \dots, K-1`.

Two objectives pick the best path with exactly :math:`K` nodes:

- ``"sum"``: the shortest path, :math:`\min \sum_m c_m`.
- ``"minimax"`` (LeMiCa): compare paths by their edge costs sorted in
  descending order, lexicographically: the smallest largest cost, then among
  those the smallest second-largest cost, and so on. All paths of one budget
  have :math:`K-1` edges, so the vectors have equal length.

Both are solved exactly by dynamic programming over the states
:math:`(j, k)` = "at node :math:`j` having used :math:`k` nodes". With
:math:`F(0, 1)` the empty path,

.. math::
    F(j, k) = \min_{i < j,\ C_{ij} < \infty} F(i, k-1) \oplus C_{ij}

where for ``"sum"`` :math:`F` is the total and :math:`\oplus` is addition, and
for ``"minimax"`` :math:`F` is the sorted-descending cost vector and
:math:`V \oplus c` inserts :math:`c` into :math:`V` at its sorted place. The
answer is :math:`F(N-1, K)`; each state keeps one best path, so the work is
:math:`O(N^2 K)` transitions (:math:`O(N W K)` with a window), each costing
:math:`O(K)` for the minimax vectors.

Why keeping one path per state is exact: the DP is exact when :math:`\oplus`
is monotone, :math:`V \le V' \Rightarrow V \oplus c \le V' \oplus c`, and
preserves strict order, because then replacing the prefix of an optimal path by
a better prefix to the same state cannot make the whole path worse. For sums
this is plain arithmetic (done exactly, see below). For sorted-descending
vectors of equal length compared lexicographically, argue by induction on the
length. Let :math:`a = \max V`, :math:`a' = \max V'`; :math:`V < V'` means
:math:`a < a'`, or :math:`a = a'` and :math:`V \setminus a < V' \setminus a'`.

- If :math:`c \ge \max(a, a')`, both results start with :math:`c` and continue
  with :math:`V` and :math:`V'`: their order is unchanged.
- If :math:`a < a'` and :math:`c < a'`, the result from :math:`V` starts with
  :math:`\max(a, c) < a'`, the result from :math:`V'` with :math:`a'`: strict.
- If :math:`a = a'` and :math:`c < a`, both start with :math:`a` and continue
  with :math:`(V \setminus a) \oplus c` and :math:`(V' \setminus a) \oplus c`,
  which keep their order by induction.

Equal vectors stay equal, so there is no tie case in which the DP loses the
optimum.

Tie rule: among optimal paths the lexicographically smallest compute tuple
wins (the one that computes earlier steps). The DP compares states by the pair
(objective, path); appending the same edge to two paths ending at the same node
keeps their lexicographic order, so the pair is monotone too and the DP returns
exactly the brute-force minimiser of (objective, path).

Exactness of ``"sum"``: float addition can round two different prefix totals to
the same value later on and break the tie rule, so totals are kept as exact
integers (every finite float is an integer multiple of a power of two; all
costs are scaled to one common power-of-two denominator). The reported value is
the correctly rounded exact sum, equal to :func:`math.fsum` of the edge costs.

Costs may be negative (the graph is acyclic, so both objectives stay well
defined); NaN and :math:`-\infty` in the upper triangle are rejected.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Sequence

import numpy as np

from .schedule import Schedule, as_integer

OBJECTIVES = ("minimax", "sum")


class GraphSearchError(ValueError):
    """A cost matrix, budget, objective or path the graph search cannot use."""


def best_path(costs: np.ndarray, budget: int, objective: str = "minimax") -> tuple[int, ...]:
    r"""Best schedule with exactly ``budget`` compute steps, by exact DP.

    Parameters
    ----------
    costs : array-like, shape (N, N)
        ``costs[i, j]`` (i < j) is the cost of edge i -> j; ``inf`` forbids the
        edge. Entries with i >= j are ignored.
    budget : int
        Number of compute steps (path nodes), 0 and N-1 included; 2 <= budget <= N.
    objective : {"minimax", "sum"}
        ``"minimax"``: lexicographically smallest sorted-descending edge costs
        (LeMiCa). ``"sum"``: smallest total cost.

    Returns
    -------
    compute : tuple of int
        Sorted compute steps, starting at 0 and ending at N-1. Ties go to the
        lexicographically smallest tuple.

    Raises
    ------
    GraphSearchError
        Malformed costs, budget out of range or infeasible, unknown objective.
    """
    matrix = _validated_costs(costs)
    n = matrix.shape[0]
    budget = _validated_budget(budget, n)
    _check_objective(objective)
    _check_feasible(matrix, budget)

    # Incoming finite edges per node: the only transitions the DP needs.
    incoming: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for i, j in zip(*np.nonzero(np.triu(np.isfinite(matrix), k=1))):
        incoming[int(j)].append((int(i), float(matrix[i, j])))

    if objective == "sum":
        scale = _common_denominator(matrix)
        weights = [[(i, _scaled_int(c, scale)) for i, c in edges] for edges in incoming]
        return _dp(n, budget, weights, operator.add, 0)
    return _dp(n, budget, incoming, _insert_desc, (), _largest_after_insert)


def feasible_budgets(costs: np.ndarray) -> tuple[int, int]:
    """Smallest and largest budget for which a path 0 -> N-1 exists.

    With a window (every edge with j - i <= W finite) every budget between the
    two is feasible; with an arbitrary pattern of ``inf`` there can be gaps,
    which :func:`best_path` reports.
    """
    counts = _feasible_node_counts(_validated_costs(costs))
    if not counts:
        raise GraphSearchError(
            "no path from step 0 to the last step uses only finite edges; "
            "make more edges finite (e.g. a larger window)"
        )
    return min(counts), max(counts)


def all_graph_solutions(costs: np.ndarray, objective: str = "minimax") -> dict[int, Schedule]:
    """The graph search's schedule at every feasible budget: what the slider's budget path starts from.

    One matrix, one solve per budget (milliseconds each at N = 50).
    """
    low, high = feasible_budgets(costs)
    n = np.asarray(costs).shape[0]
    solutions = {}
    for k in range(low, high + 1):
        try:
            solutions[k] = Schedule(n, best_path(costs, k, objective), source="reference")
        except GraphSearchError:  # a gap in an arbitrary pattern of forbidden edges
            continue
    return solutions


def path_costs(costs: np.ndarray, compute: Sequence[int]) -> np.ndarray:
    """Edge costs along the schedule ``compute``, in path order (may contain inf)."""
    matrix = _validated_costs(costs)
    steps = _validated_compute(compute, matrix.shape[0])
    return np.array([matrix[i, j] for i, j in zip(steps, steps[1:])], dtype=np.float64)


def objective_value(
    costs: np.ndarray, compute: Sequence[int], objective: str = "minimax"
) -> float | tuple[float, ...]:
    """The objective of schedule ``compute``; smaller is better for both.

    ``"sum"``: the correctly rounded total (:func:`math.fsum`), a float.
    ``"minimax"``: the edge costs sorted in descending order, a tuple; tuples
    of one budget compare lexicographically with ``<``.
    """
    _check_objective(objective)
    edge_costs = [float(c) for c in path_costs(costs, compute)]
    if objective == "sum":
        return math.fsum(edge_costs)
    return tuple(sorted(edge_costs, reverse=True))


def _dp(
    n: int,
    budget: int,
    incoming: list[list[tuple[int, Any]]],
    extend: Callable[[Any, Any], Any],
    empty: Any,
    head: Callable[[Any, Any], Any] | None = None,
) -> tuple[int, ...]:
    """Layered DP over (node, nodes used); returns the best path to (n-1, budget).

    States are compared by (value, path), which is what makes the tie rule exact.
    ``head(value, cost)``, if given, is the first entry of ``extend(value, cost)``,
    computed cheaply to skip candidates that lose on it. The caller has checked
    that the budget is feasible.
    """
    layer: list = [None] * n
    layer[0] = (empty, (0,))
    for k in range(2, budget + 1):
        new_layer: list = [None] * n
        # A path with k nodes ends at j >= k-1 and must leave budget-k distinct
        # nodes after j, so j <= n-1-(budget-k); states outside cannot finish.
        for j in range(k - 1, n - (budget - k)):
            best = None
            for i, c in incoming[j]:
                state = layer[i]
                if state is None:
                    continue
                if best is not None and head is not None and head(state[0], c) > best[0][0]:
                    continue  # cheap reject: the candidate's leading entry already loses
                candidate = (extend(state[0], c), state[1])
                if best is None or candidate < best:
                    best = candidate
            if best is not None:
                new_layer[j] = (best[0], best[1] + (j,))
        layer = new_layer
    return layer[n - 1][1]


def _insert_desc(vector: tuple[float, ...], cost: float) -> tuple[float, ...]:
    # Timsort on an already sorted run plus one element is linear and in C.
    return tuple(sorted((*vector, cost), reverse=True))


def _largest_after_insert(vector: tuple[float, ...], cost: float) -> float:
    return max(vector[0], cost) if vector else cost


def _common_denominator(matrix: np.ndarray) -> int:
    """Power of two that turns every finite upper-triangle cost into an integer."""
    upper = matrix[np.triu_indices(matrix.shape[0], k=1)]
    return max((float(c).as_integer_ratio()[1] for c in upper[np.isfinite(upper)]), default=1)


def _scaled_int(cost: float, scale: int) -> int:
    numerator, denominator = cost.as_integer_ratio()
    return numerator * (scale // denominator)


def _feasible_node_counts(matrix: np.ndarray) -> set[int]:
    """All K for which a finite path 0 -> N-1 with K nodes exists.

    Bitset DP: bit k of ``reach[j]`` says node j is reachable with k nodes.
    """
    n = matrix.shape[0]
    finite = np.isfinite(matrix)
    reach = [0] * n
    reach[0] = 1 << 1
    for j in range(1, n):
        for i in range(j):
            if finite[i, j]:
                reach[j] |= reach[i] << 1
    return {k for k in range(n + 1) if reach[n - 1] >> k & 1}


def _check_feasible(matrix: np.ndarray, budget: int) -> None:
    counts = _feasible_node_counts(matrix)
    if budget in counts:
        return
    if not counts:
        raise GraphSearchError(
            "no path from step 0 to the last step uses only finite edges; "
            "make more edges finite (e.g. a larger window)"
        )
    low, high = min(counts), max(counts)
    if budget < low:
        raise GraphSearchError(
            f"budget {budget} is too small: with the forbidden (inf) edges of this cost "
            f"matrix (e.g. its window) the smallest feasible budget is {low}; "
            "raise the budget or widen the window"
        )
    if budget > high:
        raise GraphSearchError(
            f"budget {budget} is too large: with the forbidden (inf) edges of this cost "
            f"matrix the largest feasible budget is {high}; lower the budget"
        )
    raise GraphSearchError(
        f"budget {budget} is not feasible for the forbidden (inf) edges of this cost "
        f"matrix; feasible budgets: {sorted(counts)}"
    )


def _validated_costs(costs: np.ndarray) -> np.ndarray:
    try:
        matrix = np.asarray(costs, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise GraphSearchError(f"costs must be a numeric (N, N) array: {error}") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise GraphSearchError(
            f"costs must be a square 2-D (N, N) array, got shape {matrix.shape}"
        )
    n = matrix.shape[0]
    if n < 2:
        raise GraphSearchError(f"costs must cover at least 2 steps (N >= 2), got N = {n}")
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    bad = upper & (np.isnan(matrix) | (matrix == -np.inf))
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise GraphSearchError(
            f"costs[{i}, {j}] is {matrix[i, j]}; edge costs (i < j) must be finite, "
            "or +inf to forbid an edge (replace NaN/-inf, e.g. with inf)"
        )
    return matrix


def _validated_budget(budget: int, n: int) -> int:
    budget = as_integer(budget, "budget", error=GraphSearchError)
    if not 2 <= budget <= n:
        raise GraphSearchError(
            f"budget must be between 2 and N = {n} (steps 0 and {n - 1} always compute), "
            f"got {budget}"
        )
    return budget


def _validated_compute(compute: Sequence[int], n: int) -> tuple[int, ...]:
    try:
        steps = tuple(operator.index(s) for s in compute)
    except TypeError:
        raise GraphSearchError(f"compute must be a sequence of integers, got {compute!r}") from None
    if len(steps) < 2 or steps[0] != 0 or steps[-1] != n - 1:
        raise GraphSearchError(
            f"compute must start at step 0 and end at step {n - 1}, got {steps}"
        )
    if any(a >= b for a, b in zip(steps, steps[1:])):
        raise GraphSearchError(f"compute must be strictly increasing, got {steps}")
    return steps


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise GraphSearchError(
            f"unknown objective {objective!r}; valid objectives: {', '.join(OBJECTIVES)}"
        )
