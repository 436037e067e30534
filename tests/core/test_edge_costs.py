"""otcache_core.edge_costs: the error metric, local costs by hand, the resumable cost-matrix file."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from comfyui_otcache.otcache_core import edge_costs
from comfyui_otcache.otcache_core.edge_costs import (
    CostMatrix,
    EdgeCostError,
    error,
    local_edge_costs,
    min_budget,
    window_costs,
    window_edges,
)
from comfyui_otcache.otcache_core.graph import best_path, feasible_budgets

INF = math.inf


# ----------------------------------------------------------------- error metric

def test_error_is_relative_l2_of_the_whole_tensor():
    ref = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # norm 5
    final = ref + torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert error(final, ref) == pytest.approx(1 / 5)
    assert error(ref, ref) == 0.0
    assert error(np.array([1.0, 1.0]), np.array([0.0, 2.0])) == pytest.approx(math.sqrt(2) / 2)
    # float64 inside: no float32 rounding of a tiny difference
    big = torch.full((1000,), 1.0, dtype=torch.float32)
    assert error(big + 1e-3, big) == pytest.approx(1e-3, rel=1e-3)


def test_error_with_zero_reference_is_absolute_and_shapes_must_match():
    assert error(torch.tensor([3.0, 4.0]), torch.zeros(2)) == pytest.approx(5.0)
    with pytest.raises(EdgeCostError, match="shapes differ"):
        error(torch.zeros(2, 3), torch.zeros(3, 2))


# ----------------------------------------------------------------- windows

def test_window_edges_costs_and_min_budget():
    assert window_edges(5, 3) == [(0, 2), (0, 3), (1, 3), (1, 4), (2, 4)]
    c = window_costs(5, 3, fill=7.0)
    assert [c[i, i + 1] for i in range(4)] == [0.0] * 4
    assert c[0, 2] == 7.0 and c[0, 3] == 7.0 and c[0, 4] == INF and c[2, 1] == INF
    assert min_budget(10, 4) == 4 and min_budget(50, 5) == 11 and min_budget(5, 4) == 2
    assert feasible_budgets(window_costs(10, 4)) == (min_budget(10, 4), 10)
    with pytest.raises(EdgeCostError, match="max_skip"):
        window_edges(5, 0)


# ----------------------------------------------------------------- local costs

def test_local_edge_costs_by_hand():
    outputs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    sigmas = [1.0, 0.75, 0.5, 0.2, 0.0]  # step sizes 0.25, 0.25, 0.3, 0.2
    c = local_edge_costs(outputs, sigmas, max_skip=3)
    r2 = math.sqrt(2)
    expected = np.full((4, 4), INF)
    expected[0, 1] = expected[1, 2] = expected[2, 3] = 0.0
    # skip step 1 (reuse o0): |s2 - s1| * ||o0 - o1|| / ||o1||
    expected[0, 2] = 0.25 * r2 / 1
    # ... and step 2: + |s3 - s2| * ||o0 - o2|| / ||o2||
    expected[0, 3] = 0.25 * r2 + 0.3 * 1 / r2
    expected[1, 3] = 0.3 * 1 / r2  # reuse o1 on step 2
    np.testing.assert_allclose(c, expected, rtol=1e-12)
    # a narrower window forbids the long edge; torch input gives the same numbers
    c2 = local_edge_costs(torch.tensor(outputs), torch.tensor(sigmas), max_skip=2)
    assert c2[0, 3] == INF and c2[0, 2] == pytest.approx(expected[0, 2])


def test_local_edge_costs_zero_output_and_bad_sigmas():
    outputs = np.array([[1.0], [0.0], [1.0]])
    c = local_edge_costs(outputs, [1.0, 0.5, 0.25, 0.0], max_skip=2)
    assert c[0, 2] == pytest.approx(0.25 * 1.0)  # ||o1|| = 0: absolute norm
    with pytest.raises(EdgeCostError, match="N \\+ 1"):
        local_edge_costs(outputs, [1.0, 0.5, 0.0], max_skip=2)
    with pytest.raises(EdgeCostError, match="finite"):
        local_edge_costs(np.array([[np.nan], [1.0], [1.0]]), [1.0, 0.5, 0.25, 0.0], max_skip=2)


# ----------------------------------------------------------------- the cost matrix

def _filled(seeds=2, steps=6, max_skip=3, upto=None) -> CostMatrix:
    m = CostMatrix.new(steps, max_skip, seeds, "global", info={"note": "test"})
    for k, (s, i, j) in enumerate(m.pending()):
        if upto is not None and k >= upto:
            break
        m.record(s, i, j, 0.01 * (j - i) ** 2 + 0.001 * i + s * 0.0001)
    return m


def test_matrix_pending_record_and_mean_costs():
    m = CostMatrix.new(6, 3, 2, "global")
    assert m.edges_total == 2 * len(window_edges(6, 3)) and not m.complete
    assert m.pending()[0] == (0, 0, 2) and m.pending(1)[0] == (1, 0, 2)
    with pytest.raises(EdgeCostError, match="incomplete"):
        m.costs()
    assert np.isinf(m.costs(allow_incomplete=True)[0, 2])
    with pytest.raises(EdgeCostError, match="window"):
        m.record(0, 0, 4, 1.0)
    with pytest.raises(EdgeCostError, match="non-finite"):
        m.record(0, 0, 2, float("nan"))
    full = _filled()
    assert full.complete and full.pending() == []
    c = full.costs()
    assert c[0, 2] == pytest.approx(0.04 + 0.00005)  # the mean of the two seeds
    assert c[0, 1] == 0.0 and c[0, 4] == INF
    assert best_path(c, 3, "minimax")[0] == 0


def test_save_load_round_trip(tmp_path):
    m = _filled(upto=7)
    m.extras["final_0"] = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    m.info["evaluations"] = 42
    path = m.save(tmp_path / "sub" / "c.safetensors")
    loaded = CostMatrix.load(path)
    assert (loaded.steps, loaded.max_skip, loaded.seeds, loaded.edge_cost) == (6, 3, 2, "global")
    np.testing.assert_array_equal(loaded.done, m.done)
    np.testing.assert_array_equal(loaded.values[m.done], m.values[m.done])
    assert np.isnan(loaded.values[~m.done]).all()
    assert loaded.info == {"note": "test", "evaluations": 42}
    assert torch.equal(loaded.extras["final_0"], m.extras["final_0"])
    # resume: what is left after loading is exactly what was left before saving
    assert loaded.pending() == m.pending() and len(loaded.pending()) == m.edges_total - 7
    assert loaded.matches(6, 3, 2, "global") and not loaded.matches(6, 4, 2, "global")
    assert os.listdir(path.parent) == ["c.safetensors"]  # no temporary file left


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    _filled(upto=3).save(path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(edge_costs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        _filled().save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["c.safetensors"]  # and the temporary file is gone
    assert CostMatrix.load(path).edges_done == 3


def test_load_rejects_broken_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(EdgeCostError, match="not a readable"):
        CostMatrix.load(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(EdgeCostError, match="not an OTCache edge-cost file"):
        CostMatrix.load(foreign)
    with pytest.raises(EdgeCostError, match="cannot read"):
        CostMatrix.load(tmp_path / "missing.safetensors")


def test_record_seed_takes_a_local_matrix():
    outputs = np.random.default_rng(0).normal(size=(6, 4))
    sigmas = np.linspace(1, 0, 7)
    m = CostMatrix.new(6, 3, 1, "local")
    m.record_seed(0, local_edge_costs(outputs, sigmas, 3))
    assert m.complete
    np.testing.assert_allclose(m.costs(), local_edge_costs(outputs, sigmas, 3))
