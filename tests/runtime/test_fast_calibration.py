"""The fast edge costs and batched tails on a tiny real FLUX: counted transformer calls, costs, schedules, resume."""
from __future__ import annotations

import comfy.model_management
import numpy as np
import pytest
from sampling import conditioning_pair, count_block_stack_calls

from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent
from comfyui_otcache.otcache_comfy import calibration as cal
from comfyui_otcache.otcache_core.edge_costs import CostMatrix, arrival_key, min_budget
from comfyui_otcache.otcache_core.fast_costs import exact_evaluations, fast_evaluations, growth_edges, growth_stride
from comfyui_otcache.otcache_core.graph import best_path
from comfyui_otcache.otcache_core.schedule import Schedule
from comfyui_otcache.otcache_core.warp import w1_steps

REPLAY_CHECK = 3  # evaluations of the once-per-calibration check that replays repeat the full run


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("flux", seed=0, scale=0.5)


def setup_for(model, steps: int) -> cal.SamplingSetup:
    positive, negative = conditioning_pair("flux", separate=False)
    return cal.SamplingSetup(model, positive, negative, tiny_latent("flux"), "euler", "simple", steps, 1.0)


def calibrated(model, steps, window, edge_cost, seeds=1, **kw):
    matrix = CostMatrix.new(steps, window, seeds, edge_cost)
    with count_block_stack_calls(model) as counter:
        stats = cal.calibrate(setup_for(model, steps), 7, matrix, "output", **kw)
    return matrix, stats, counter["calls"]


def test_fast_calibration_runs_a_tenth_of_the_exact_evaluations(model):
    n, w = 20, 5  # the node's defaults
    matrix, stats, calls = calibrated(model, n, w, "fast")
    stride = growth_stride(n, w)
    assert calls == stats.evaluations == fast_evaluations(n, w, stride) + REPLAY_CHECK
    assert calls <= exact_evaluations(n, w) / 10
    assert matrix.fast_design == "surface"  # new fast calibrations fit the surface
    assert matrix.complete and matrix.edges == growth_edges(n, w, design="surface")
    costs = matrix.costs()
    arrival = matrix.extras[arrival_key(0)].numpy()
    for i, j in growth_edges(n, w, design="surface"):  # measured edges keep their exact cost
        assert costs[i, j] == matrix.values[0, i, j] > 0
    assert np.isfinite(arrival[0, 2]) and np.isnan(arrival[0, 1])  # window edges only
    best_path(costs, min_budget(n, w))  # a usable matrix down to the smallest budget


@pytest.mark.slow  # an exact global calibration at N = 20 (666 evaluations)
def test_fast_schedules_match_the_exact_ones(model):
    n, w = 20, 5
    exact, exact_stats, exact_calls = calibrated(model, n, w, "global")
    fast, fast_stats, fast_calls = calibrated(model, n, w, "fast")
    assert exact_calls == exact_stats.evaluations == exact_evaluations(n, w) + REPLAY_CHECK
    assert fast_calls * 10 <= exact_calls
    for budget in (n // 2, min_budget(n, w)):  # N/2 and the smallest the window allows (N/4)
        a = Schedule(n, best_path(exact.costs(), budget))
        b = Schedule(n, best_path(fast.costs(), budget))
        assert w1_steps(a, b) <= 1.0, (budget, str(a), str(b))
    for i, j in fast.edges:  # the same tails, split at j: the same exact costs
        assert fast.values[0, i, j] == pytest.approx(exact.values[0, i, j], rel=1e-4)


def test_batched_tails_give_the_same_costs_with_fewer_model_calls(model):
    n, w = 10, 4
    one, one_stats, one_calls = calibrated(model, n, w, "global", seeds=2)
    batched, stats, calls = calibrated(model, n, w, "global", seeds=2, tail_batch=4)
    np.testing.assert_allclose(batched.costs(), one.costs(), rtol=1e-4, atol=1e-7)
    # Split at j: one arrival evaluation per start step instead of one per edge.
    edges = one.edges
    arrivals = 2 * len({i for i, _ in edges})
    assert stats.evaluations == one_stats.evaluations - 2 * len(edges) + arrivals
    # Tails ending at j share one call per step for up to 4 edges of both seeds.
    groups = {}
    for i, j in edges:
        groups[j] = groups.get(j, 0) + 2
    tail_calls = sum(-(-members // 4) * (n - j) for j, members in groups.items())
    assert calls == 2 * n + REPLAY_CHECK + arrivals + tail_calls < one_calls


def test_interrupted_fast_calibration_resumes_without_recomputing(model, tmp_path):
    n, w = 20, 5
    path = tmp_path / "fast.safetensors"
    matrix = CostMatrix.new(n, w, 2, "fast")
    done_before = []

    def stop_after_first_tail(done, total):
        if matrix.edges_done == 1 and not done_before:
            done_before.append(matrix.edges_done)
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        cal.calibrate(setup_for(model, n), 7, matrix, "output", path=path, progress=stop_after_first_tail)
    resumed, _ = cal.load_or_new(path, n, w, 2, "fast")
    assert resumed.edges_done == 1 and all(arrival_key(s) in resumed.extras for s in range(2))
    (_, _, first_j), = [(s, i, j) for s in range(2) for i, j in resumed.edges if resumed.done[s, i, j]]
    with count_block_stack_calls(model) as counter:
        stats = cal.calibrate(setup_for(model, n), 7, resumed, "output", path=path)
    assert stats.edges == len(growth_edges(n, w, design="surface")) * 2 - 1 and stats.recorded == 0
    # Resumed: no trajectory, no arrival pass; each remaining tail, one arrival run to rebuild its start, and
    # the once-per-call replay check.
    tails = sum(n - j for s in range(2) for i, j in growth_edges(n, w, design="surface")) - (n - first_j)
    assert counter["calls"] == stats.evaluations == tails + stats.edges + REPLAY_CHECK
    whole, _, _ = calibrated(model, n, w, "fast", seeds=2)
    np.testing.assert_allclose(resumed.costs(), whole.costs(), rtol=1e-6)

