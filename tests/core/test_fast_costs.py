"""The fast edge-cost estimate: its evaluation plan and its arithmetic (pure, no sampling)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from comfyui_otcache.otcache_core.edge_costs import EdgeCostError, window_edges
from comfyui_otcache.otcache_core.fast_costs import (
    exact_evaluations,
    fast_costs,
    fast_evaluations,
    growth_edge,
    growth_edges,
    growth_steps,
    growth_stride,
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
