"""The fast edge-cost estimate: its evaluation plan and its arithmetic (pure, no sampling)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from comfyui_otcache.otcache_core.edge_costs import CostMatrix, EdgeCostError, window_edges
from comfyui_otcache.otcache_core.fast_costs import (
    DEFAULT_DESIGN,
    exact_evaluations,
    fast_costs,
    fast_evaluations,
    growth_edge,
    growth_edges,
    growth_steps,
    growth_stride,
    surface_costs,
    surface_edge,
)


@pytest.mark.parametrize("steps, window", [(20, 5), (28, 8), (28, 9), (50, 8), (50, 12)])
def test_the_plan_stays_within_a_tenth_of_the_exact_calibration(steps, window):
    stride = growth_stride(steps, window)
    assert fast_evaluations(steps, window, stride) <= exact_evaluations(steps, window) / 10
    assert stride == 1 or fast_evaluations(steps, window, stride - 1) > exact_evaluations(steps, window) / 10
    js = growth_steps(steps, stride)
    assert js[0] == 2 and js[-1] == steps - 1 and js == sorted(set(js))
    assert all((i, j) in set(window_edges(steps, window)) for i, j in growth_edges(steps, window))


def test_exact_evaluations_count_the_full_run_and_every_tail():
    # N = 6, W = 3: edges (0,2) (0,3) (1,3) (1,4) (2,4) (2,5) (3,5): tails N - j + 1 each, plus the full run.
    assert exact_evaluations(6, 3) == 6 + (5 + 4 + 4 + 3 + 3 + 2 + 2)


def test_growth_edge_is_the_middle_edge_into_j():
    assert growth_edge(10, 4) == (7, 10)  # starts 6, 7, 8
    assert growth_edge(2, 8) == (0, 2)
    with pytest.raises(EdgeCostError, match="no edge"):
        growth_edge(1, 4)


def test_costs_are_exact_where_measured_and_growth_times_arrival_elsewhere():
    n, w = 8, 3
    arrival = np.full((n, n), np.nan)
    for i, j in window_edges(n, w):
        arrival[i, j] = 0.01 * (j - i)
    exact, done = np.full((n, n), np.nan), np.zeros((n, n), bool)
    exact[0, 2], done[0, 2] = 0.02 * 8.0, True  # growth 8 at j = 2
    exact[5, 7], done[5, 7] = 0.02 * 2.0, True  # growth 2 at j = 7
    costs = fast_costs(arrival, exact, done, w)
    assert costs[0, 2] == exact[0, 2] and costs[5, 7] == exact[5, 7]
    g = lambda j: math.exp(np.interp(j, [2, 7], [math.log(8.0), math.log(2.0)]))  # noqa: E731
    assert costs[1, 4] == pytest.approx(g(4) * arrival[1, 4])
    assert costs[0, 3] == pytest.approx(g(3) * arrival[0, 3])
    assert costs[3, 4] == 0.0 and math.isinf(costs[0, 4]) and math.isinf(costs[4, 3])


def test_costs_need_a_measured_growth():
    arrival = np.full((6, 6), 0.1)
    with pytest.raises(EdgeCostError, match="no measured growth"):
        fast_costs(arrival, np.zeros((6, 6)), np.zeros((6, 6), bool), 3)


def test_surface_design_measures_the_same_columns_with_edges_of_every_length():
    steps, window = 50, 8
    growth, surface = growth_edges(steps, window), growth_edges(steps, window, design="surface")
    assert [j for _, j in surface] == [j for _, j in growth]  # same tails, so the same evaluations
    assert set(surface) <= set(window_edges(steps, window))
    assert {j - i for i, j in surface} == set(range(2, window + 1))  # rows and columns both vary
    # starts 6, 7, 8 into j = 10: frac(k * 0.618) = 0, 0.618, 0.236, 0.854 -> 6, 7, 6, 8
    assert [surface_edge(k, 10, 4) for k in range(4)] == [(6, 10), (7, 10), (6, 10), (8, 10)]
    for window in (4, 7, 10):  # windows whose start count a fixed stride would cycle short
        assert {j - i for i, j in growth_edges(steps, window, design="surface")} == set(range(2, window + 1))
    with pytest.raises(EdgeCostError, match="unknown fast design"):
        growth_edges(steps, window, design="grid")


def _log_ratio(i, j, n):  # a degree-2 surface in (u, v) = (2i/n - 1, 2j/n - 1)
    u, v = 2 * i / n - 1, 2 * j / n - 1
    return 1.5 - 0.8 * v + 0.4 * u * v + 0.3 * u * u


def test_surface_costs_recover_a_smooth_growth_from_the_measured_edges():
    n, w = 50, 8
    arrival, exact = np.full((n, n), np.nan), np.full((n, n), np.nan)
    for i, j in window_edges(n, w):
        arrival[i, j] = 0.01 * (j - i) ** 1.5
        exact[i, j] = arrival[i, j] * math.exp(_log_ratio(i, j, n))
    done = np.zeros((n, n), bool)
    for e in growth_edges(n, w, design="surface"):
        done[e] = True
    costs = surface_costs(arrival, np.where(done, exact, np.nan), done, w)
    window = window_edges(n, w)
    measured = [_log_ratio(i, j, n) for i, j in growth_edges(n, w, design="surface")]
    expected = [arrival[i, j] * math.exp(np.clip(_log_ratio(i, j, n), min(measured), max(measured))) for i, j in window]
    np.testing.assert_allclose([costs[e] for e in window], expected, rtol=0.01)  # the ridge: a small bias
    assert costs[3, 4] == 0.0 and math.isinf(costs[0, 20])
    # The per-column growth of the first design cannot follow a growth that depends on the start too.
    growth_done = np.zeros((n, n), bool)
    for e in growth_edges(n, w):
        growth_done[e] = True
    old = fast_costs(arrival, np.where(growth_done, exact, np.nan), growth_done, w)
    assert max(abs(math.log(old[e] / exact[e])) for e in window) > 0.05


def test_surface_costs_fall_back_to_one_growth_and_stay_within_the_measured_range():
    n, w = 12, 3
    arrival = np.full((n, n), np.nan)
    for i, j in window_edges(n, w):
        arrival[i, j] = 0.1
    exact, done = np.full((n, n), np.nan), np.zeros((n, n), bool)
    exact[0, 2], done[0, 2] = 0.4, True  # two measured edges: too few for a slope, one growth for all
    exact[8, 11], done[8, 11] = 0.1, True
    costs = surface_costs(arrival, exact, done, w)
    assert costs[0, 2] == 0.4 and costs[8, 11] == 0.1
    estimated = [costs[e] for e in window_edges(n, w) if not done[e]]
    assert np.allclose(estimated, estimated[0]) and 0.1 <= estimated[0] <= 0.4
    with pytest.raises(EdgeCostError, match="no measured growth"):
        surface_costs(arrival, np.zeros((n, n)), np.zeros((n, n), bool), w)


def test_new_fast_matrices_use_the_surface_and_saved_ones_keep_their_design():
    assert DEFAULT_DESIGN == "surface"
    new = CostMatrix.new(20, 5, 1, "fast")
    assert new.fast_design == "surface" and new.edges == growth_edges(20, 5, design="surface")
    assert CostMatrix.from_bytes(new.to_bytes()).fast_design == "surface"  # the design is saved with it
    saved = CostMatrix(20, 5, 1, "fast", new.values, new.done, {})  # a file from before designs existed
    assert saved.fast_design == "growth" and saved.edges == growth_edges(20, 5)
