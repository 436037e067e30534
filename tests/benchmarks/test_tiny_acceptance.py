"""benchmarks/tiny/acceptance.py: own reference vs published (W1), published vs uniform per prompt."""
from __future__ import annotations

import pytest

from benchmarks.tiny import acceptance

PUBLISHED_28 = [0, 1, 6, 13, 20, 27]  # lemica-flux1-dev-50-10 resampled to 28 steps


def _cell(uniform_budgets=(6,)):
    n = 28
    on_path = set(zip(PUBLISHED_28, PUBLISHED_28[1:]))
    costs = [[None if j <= i or j - i > 8 else (0.0 if (i, j) in on_path else 1.0) for j in range(n)]
             for i in range(n)]
    rows = [{"method": "LeMiCa (published)", "schedule": "28:" + ",".join(map(str, PUBLISHED_28)), "budget": 6,
             "psnr": 30.5, "per_prompt": [{"psnr": 30.0}, {"psnr": 31.0}, {"psnr": 28.0}]}]
    for k in uniform_budgets:
        rows.append({"method": "uniform", "schedule": f"uniform {k}", "budget": k, "psnr": 29.0 + k,
                     "per_prompt": [{"psnr": 29.0}, {"psnr": 32.0}, {"psnr": 27.0 + k - 6}]})
    return {"model": "flux", "family": "flux", "steps": n, "rows": rows, "schedules": {"edge_costs_mean": costs}}


def test_reference_from_the_cost_matrix_and_the_margins_per_prompt():
    check = acceptance.check_cell(_cell())
    assert check["budget"] == 6 and check["published"] == "28:" + ",".join(map(str, PUBLISHED_28))
    assert check["reference"] == check["published"]  # the zero-cost edges are the published path
    assert check["w1_reference_published"] == pytest.approx(0.0, abs=1e-9)
    assert check["w1_uniform_published"] == pytest.approx(2.8, abs=0.01)
    assert check["uniform_budget_compared"] == 6
    assert check["margin_db_mean"] == pytest.approx((1.0 - 1.0 + 1.0) / 3)
    assert check["margin_db_min"] == pytest.approx(-1.0)
    assert (check["published_wins"], check["prompts"]) == (2, 3)


def test_uniform_at_the_nearest_larger_budget_when_the_published_one_was_not_measured():
    check = acceptance.check_cell(_cell(uniform_budgets=(5, 9, 14)))
    assert check["uniform_budget_compared"] == 9  # never a smaller budget (less computation) than published
    assert check["margin_db_min"] == pytest.approx(28.0 - 30.0)
    table = acceptance.markdown([check], "x.json")
    assert "| flux | 28 | 6 | 0.00 | 2.80 |" in table and "(9)" in table
