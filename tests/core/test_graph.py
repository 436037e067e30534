"""Graph search (otcache_core/graph.py) against brute force over every schedule."""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyui_otcache.otcache_core.graph import (
    GraphSearchError,
    best_path,
    feasible_budgets,
    objective_value,
    path_costs,
)

OBJECTIVES = ("minimax", "sum")


def brute_force(costs: np.ndarray, budget: int, objective: str) -> tuple[int, ...] | None:
    """The minimiser of (objective, compute) over all schedules with ``budget`` nodes.

    Sums are exact (Fraction) and ties go to the lexicographically smallest
    compute tuple: the rule graph.py documents.
    """
    n = costs.shape[0]
    best = None
    for interior in itertools.combinations(range(1, n - 1), budget - 2):
        path = (0, *interior, n - 1)
        edges = [float(costs[i, j]) for i, j in zip(path, path[1:])]
        if not all(math.isfinite(c) for c in edges):
            continue
        if objective == "sum":
            value = sum(Fraction(c) for c in edges)
        else:
            value = tuple(sorted(edges, reverse=True))
        if best is None or (value, path) < best:
            best = (value, path)
    return None if best is None else best[1]


def windowed(costs: np.ndarray, window: int) -> np.ndarray:
    """Copy of ``costs`` with every edge longer than ``window`` forbidden."""
    n = costs.shape[0]
    i, j = np.indices((n, n))
    return np.where(j - i > window, np.inf, costs)


def random_costs(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "float":
        return rng.random((n, n))
    if kind == "ties":  # few distinct values: many equal paths, the tie rule decides
        return rng.integers(0, 4, size=(n, n)).astype(np.float64)
    if kind == "negative":
        return rng.normal(size=(n, n))
    raise AssertionError(kind)


def check_against_brute_force(costs: np.ndarray) -> int:
    """Every feasible budget, both objectives; returns how many cases were compared."""
    n = costs.shape[0]
    compared = 0
    for budget in range(2, n + 1):
        for objective in OBJECTIVES:
            expected = brute_force(costs, budget, objective)
            if expected is None:
                with pytest.raises(GraphSearchError, match="budget|no path"):
                    best_path(costs, budget, objective)
                continue
            got = best_path(costs, budget, objective)
            assert objective_value(costs, got, objective) == objective_value(
                costs, expected, objective
            ), (n, budget, objective)
            assert got == expected, (n, budget, objective)
            compared += 1
    return compared


@pytest.mark.parametrize("kind", ["float", "ties", "negative"])
@pytest.mark.parametrize("n", range(2, 13))
def test_matches_brute_force_full_graph(n: int, kind: str) -> None:
    rng = np.random.default_rng(1000 * n + len(kind))
    for _ in range(2):
        assert check_against_brute_force(random_costs(rng, n, kind)) == 2 * (n - 1)


@pytest.mark.parametrize("kind", ["float", "ties"])
@pytest.mark.parametrize("n,window", [(5, 1), (6, 2), (8, 3), (10, 2), (11, 4), (12, 3), (12, 5)])
def test_matches_brute_force_with_window(n: int, window: int, kind: str) -> None:
    rng = np.random.default_rng(100 * n + window)
    costs = windowed(random_costs(rng, n, kind), window)
    low = math.ceil((n - 1) / window) + 1
    assert feasible_budgets(costs) == (low, n)
    assert check_against_brute_force(costs) == 2 * (n - low + 1)


@pytest.mark.parametrize("n,window,kind", [(13, 4, "ties"), (14, 5, "float"), (14, 13, "ties")])
def test_matches_brute_force_larger(n: int, window: int, kind: str) -> None:
    rng = np.random.default_rng(n * window)
    assert check_against_brute_force(windowed(random_costs(rng, n, kind), window)) > 0


def test_matches_brute_force_random_inf_pattern() -> None:
    # Arbitrary forbidden edges, not a window: budgets in the middle can be infeasible.
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(3, 10))
        costs = random_costs(rng, n, "ties")
        costs[rng.random((n, n)) < 0.5] = np.inf
        feasible = [k for k in range(2, n + 1) if brute_force(costs, k, "sum") is not None]
        if feasible:
            assert feasible_budgets(costs) == (min(feasible), max(feasible))
        else:
            with pytest.raises(GraphSearchError, match="no path"):
                feasible_budgets(costs)
        assert check_against_brute_force(costs) == 2 * len(feasible)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_matches_brute_force_hypothesis(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 8), label="n")
    values = st.one_of(st.integers(0, 3).map(float), st.just(math.inf))
    rows = data.draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=n, max_size=n))
    costs = np.array(rows, dtype=np.float64)
    for budget in range(2, n + 1):
        for objective in OBJECTIVES:
            expected = brute_force(costs, budget, objective)
            if expected is None:
                with pytest.raises(GraphSearchError):
                    best_path(costs, budget, objective)
            else:
                assert best_path(costs, budget, objective) == expected


def test_minimax_prefers_small_maximum_over_small_sum() -> None:
    # (0,1,3): edges 5, 1 -> sum 6, max 5. (0,2,3): edges 4, 4 -> sum 8, max 4.
    costs = np.full((4, 4), np.inf)
    costs[0, 1], costs[1, 3] = 5.0, 1.0
    costs[0, 2], costs[2, 3] = 4.0, 4.0
    assert best_path(costs, 3, "minimax") == (0, 2, 3)
    assert best_path(costs, 3, "sum") == (0, 1, 3)
    assert objective_value(costs, (0, 2, 3), "minimax") == (4.0, 4.0)
    assert objective_value(costs, (0, 1, 3), "sum") == 6.0


def test_minimax_second_largest_decides_when_maxima_tie() -> None:
    # Both paths have max 5; (0,2,4) has second-largest 1 < 2 though it is lexicographically later.
    costs = np.full((5, 5), np.inf)
    costs[0, 1], costs[1, 4] = 5.0, 2.0
    costs[0, 2], costs[2, 4] = 1.0, 5.0
    assert best_path(costs, 3, "minimax") == (0, 2, 4)


def test_tie_goes_to_lexicographically_smallest_path() -> None:
    costs = np.ones((6, 6))
    for objective in OBJECTIVES:
        assert best_path(costs, 4, objective) == (0, 1, 2, 5)


def test_sum_is_exact_where_float_addition_would_tie() -> None:
    # Exact totals: (0,1,3) = 1e16 + 1 > (0,2,3) = 1e16, but in float both round to 1e16,
    # so a float DP would call it a tie and pick the lexicographically smaller (0,1,3).
    costs = np.full((4, 4), np.inf)
    costs[0, 1], costs[1, 3] = 1e16, 1.0
    costs[0, 2], costs[2, 3] = 1e16, 0.0
    assert best_path(costs, 3, "sum") == (0, 2, 3)
    assert objective_value(costs, (0, 2, 3), "sum") == 1e16


def test_lower_triangle_is_ignored() -> None:
    rng = np.random.default_rng(3)
    costs = rng.random((7, 7))
    scrambled = costs.copy()
    scrambled[np.tril_indices(7)] = np.nan
    for objective in OBJECTIVES:
        for budget in range(2, 8):
            assert best_path(scrambled, budget, objective) == best_path(costs, budget, objective)


def test_budget_n_and_budget_2() -> None:
    costs = np.random.default_rng(4).random((9, 9))
    for objective in OBJECTIVES:
        assert best_path(costs, 9, objective) == tuple(range(9))
        assert best_path(costs, 2, objective) == (0, 8)


def test_accepts_lists_and_numpy_integer_budget() -> None:
    costs = [[0.0, 1.0, 5.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert best_path(costs, np.int64(2), "sum") == (0, 2)
    assert best_path(costs, 3) == (0, 1, 2)


def test_n50_window10_all_budgets() -> None:
    n, window = 50, 10
    rng = np.random.default_rng(50)
    # Realistic shape: longer reuse costs more, plus noise.
    i, j = np.indices((n, n))
    costs = windowed((j - i) ** 2 * (1 + rng.random((n, n))), window)
    assert feasible_budgets(costs) == (6, 50)
    start = time.perf_counter()
    for budget in range(6, n + 1):
        for objective in OBJECTIVES:
            path = best_path(costs, budget, objective)
            assert len(path) == budget
            assert path[0] == 0 and path[-1] == n - 1
            assert max(np.diff(path)) <= window
            # Never worse than the uniform-ish spread of the same budget.
            spread = tuple(int(s) for s in np.round(np.linspace(0, n - 1, budget)))
            if max(np.diff(spread)) <= window:
                assert objective_value(costs, path, objective) <= objective_value(
                    costs, spread, objective
                )
    # Generous bound (about 0.2 s measured): all 90 searches.
    assert time.perf_counter() - start < 10.0


def test_path_costs_and_objective_value() -> None:
    costs = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(path_costs(costs, (0, 1, 3)), [1.0, 7.0])
    np.testing.assert_array_equal(path_costs(costs, [0, 3]), [3.0])
    assert objective_value(costs, (0, 2, 3), "minimax") == (11.0, 2.0)
    assert objective_value(costs, (0, 2, 3), "sum") == 13.0
    costs[0, 2] = np.inf
    assert objective_value(costs, (0, 2, 3), "sum") == math.inf


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "costs,match",
    [
        (np.zeros(4), r"square 2-D \(N, N\) array, got shape \(4,\)"),
        (np.zeros((3, 4)), r"square 2-D \(N, N\) array, got shape \(3, 4\)"),
        (np.zeros((2, 2, 2)), "square 2-D"),
        (np.zeros((1, 1)), r"at least 2 steps \(N >= 2\), got N = 1"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ],
)
def test_bad_cost_matrix(costs, match: str) -> None:
    with pytest.raises(GraphSearchError, match=match):
        best_path(costs, 2)
    with pytest.raises(GraphSearchError, match=match):
        feasible_budgets(costs)


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_nan_or_minus_inf_edge(bad: float) -> None:
    costs = np.ones((5, 5))
    costs[1, 3] = bad
    with pytest.raises(GraphSearchError, match=r"costs\[1, 3\] is .*must be finite, or \+inf"):
        best_path(costs, 3)


@pytest.mark.parametrize(
    "budget,match",
    [
        (1, "between 2 and N = 5.*got 1"),
        (6, "between 2 and N = 5.*got 6"),
        (0, "between 2 and N = 5"),
        (2.5, "must be an integer"),
        ("3", "must be an integer"),
        (True, "must be an integer"),
    ],
)
def test_bad_budget(budget, match: str) -> None:
    with pytest.raises(GraphSearchError, match=match):
        best_path(np.ones((5, 5)), budget)


def test_unknown_objective_lists_valid_ones() -> None:
    with pytest.raises(GraphSearchError, match="unknown objective 'max'.*minimax, sum"):
        best_path(np.ones((4, 4)), 3, "max")
    with pytest.raises(GraphSearchError, match="unknown objective"):
        objective_value(np.ones((4, 4)), (0, 3), "mean")


def test_budget_too_small_for_window_names_smallest_feasible() -> None:
    costs = windowed(np.ones((20, 20)), 4)  # needs ceil(19 / 4) = 5 edges, 6 nodes
    assert best_path(costs, 6, "sum")  # the named budget really is feasible
    expected = "budget 5 is too small.*smallest feasible budget is 6"
    with pytest.raises(GraphSearchError, match=expected):
        best_path(costs, 5)


def test_budget_too_large_names_largest_feasible() -> None:
    costs = np.ones((5, 5))
    costs[2, 3] = np.inf  # no path may visit both 2 and 3
    assert feasible_budgets(costs) == (2, 4)
    expected = "budget 5 is too large.*largest feasible budget is 4"
    with pytest.raises(GraphSearchError, match=expected):
        best_path(costs, 5)


def test_budget_in_a_gap_lists_feasible_budgets() -> None:
    costs = np.full((4, 4), np.inf)
    costs[0, 3] = costs[0, 1] = costs[1, 2] = costs[2, 3] = 1.0  # budgets 2 and 4 only
    assert feasible_budgets(costs) == (2, 4)
    with pytest.raises(GraphSearchError, match=r"feasible budgets: \[2, 4\]"):
        best_path(costs, 3)


def test_no_path_at_all() -> None:
    costs = np.full((4, 4), np.inf)
    costs[0, 1] = 1.0
    for call in (lambda: best_path(costs, 2), lambda: feasible_budgets(costs)):
        with pytest.raises(GraphSearchError, match="no path from step 0 to the last step"):
            call()


@pytest.mark.parametrize(
    "compute,match",
    [
        ((1, 3), "start at step 0 and end at step 3"),
        ((0, 2), "start at step 0 and end at step 3"),
        ((0,), "start at step 0"),
        ((0, 2, 1, 3), "strictly increasing"),
        ((0, 1, 1, 3), "strictly increasing"),
        ((0, 1.5, 3), "sequence of integers"),
    ],
)
def test_bad_compute(compute, match: str) -> None:
    with pytest.raises(GraphSearchError, match=match):
        path_costs(np.ones((4, 4)), compute)
