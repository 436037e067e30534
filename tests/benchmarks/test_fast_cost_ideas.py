"""benchmarks/fast_cost_ideas.py replays: the lazy refinement on a cheaper surface keeps to its share."""
from __future__ import annotations

import numpy as np

from benchmarks import fast_cost_ideas as ideas


def synthetic_cell(folder, n: int = 20, window: int = 8) -> np.ndarray:
    """Window edges whose exact cost is the arrival error times a smooth growth over (i, j); as saved
    matrices are: 0 on the single steps, inf beyond the window."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    span = np.maximum(j - i, 0)
    inside = (j > i + 1) & (j - i <= window)
    arrival = np.where(inside, 1e-3 * span**1.5 * (1 + 0.1 * np.sin(i)), 0.0)
    exact = np.where(inside, arrival * np.exp(0.04 * j + 0.02 * i), np.inf)
    exact[j == i + 1] = 0.0
    np.save(folder / "v9-toy_20_global.npy", exact)
    np.save(folder / "v9-toy_20_arrival.npy", arrival)
    (folder / "v9-toy_20_window.txt").write_text(str(window))
    return exact


def test_refinement_spends_the_freed_share_and_never_more_than_a_tenth(tmp_path):
    synthetic_cell(tmp_path)
    rows = ideas.surface_lazy_rows(tmp_path, shares=(0.10, 0.05))
    assert len(rows) == 4 and rows[2].startswith("| v9-toy_20 | 0.10 |") and rows[3].startswith("| v9-toy_20 | 0.05 |")
    used, refined = [], []
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        used.append(float(cells[2].split("(")[1].rstrip(")")))
        refined.append(int(cells[3]))
        assert all(float(x) >= 1.0 for x in cells[6:8])  # a bottleneck ratio: the exact path's is the least
    assert max(used) <= ideas.SHARE  # the refinement never spends past a tenth
    assert refined[1] > refined[0] and used[1] > 0.09  # the smaller plan's freed share goes to refinement


def test_directions_split_an_edge_along_the_measured_edge_of_its_step():
    """Along the measured edge's arrival error an edge grows as that edge did (exactly); across it as the
    surface says; the measured edge and the edges into unmeasured steps keep their estimates."""
    n = 8
    surface, exact, arrival = (np.full((n, n), np.inf) for _ in range(3))
    surface[2, 6], surface[3, 6], surface[1, 5] = 0.5, 0.9, 0.7
    exact[2, 6], arrival[3, 6] = 0.4, 0.3  # the measured edge's exact cost; edge (3, 6)'s arrival error
    alpha, residual = np.full((n, n), np.nan), np.full((n, n), np.nan)
    alpha[2, 6], residual[2, 6] = 1.0, 0.0
    alpha[3, 6], residual[3, 6] = 2.0, 0.1
    out = ideas.direction_costs(surface, exact, arrival, [(2, 6)], alpha, residual)
    growth = 0.9 / 0.3  # the surface's growth for (3, 6)
    assert out[3, 6] == np.hypot(2.0 * 0.4, growth * 0.1)
    assert out[2, 6] == 0.5 and out[1, 5] == 0.7
    residual[3, 6] = 0.0  # all along the measured direction: twice its exact cost
    assert ideas.direction_costs(surface, exact, arrival, [(2, 6)], alpha, residual)[3, 6] == 0.8
