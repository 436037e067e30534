"""benchmarks/knot_rules.py on a tiny random-weight FLUX: every rule picks a schedule of the budget, none beats the oracle."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # stages 1 and 2 and the candidates: about 15 s


def test_rules_choose_schedules_of_their_budget_and_the_oracle_bounds_them(tmp_path):
    from benchmarks import knot_rules

    out = tmp_path / "rules"
    assert knot_rules.main(["--quick", "--random-weights", "--tiny-latent", "8", "--threads", "1",
                            "--out", str(out)]) == 0
    result = json.loads((out / "knot_rules.json").read_text())
    assert [r["budget"] for r in result["rows"]] == [4, 3]  # N = 10 at speedups 2.5 and 3.33 (quick profile)
    for row in result["rows"]:
        rules = row["rules"]
        assert set(rules) == {"best3", "climb", "majority", "unanimous", "graph-first", "graph-clear", "best-all",
                              "oracle"}
        assert rules["graph-clear"]["schedule"] in row["candidates"].values()
        for rule in rules.values():
            steps, compute = rule["schedule"].split(":")
            assert int(steps) == 10 and len(compute.split(",")) == row["budget"]
            assert rule["psnr"] <= rules["oracle"]["psnr"] + 1e-9
        # best-all is the calibration minimum over a pool that holds every other rule's start.
        assert rules["best-all"]["calibration"] <= rules["best3"]["calibration"] + 1e-12
        # Every rule's choice is among the dumped candidates, with its per-sample scores.
        scored = row["scored"]
        for rule in rules.values():
            assert rule["calibration"] == pytest.approx(sum(scored[rule["schedule"]]["calibration"])
                                                        / len(scored[rule["schedule"]]["calibration"]))
            assert len(scored[rule["schedule"]]["heldout"]) == 1  # quick profile: one held-out prompt
    assert (out / "knot_rules.md").read_text().startswith("| K | N/K |")


def test_a_clear_win_beats_the_paired_standard_error():
    import numpy as np

    from benchmarks.knot_rules import clear_win

    base = np.array([-37.0, -36.0, -38.0, -37.5])
    assert clear_win(base - 0.5, base)  # the same gain on every sample: no spread
    assert not clear_win(base + np.array([-0.3, 0.25, -0.2, 0.17]), base)  # lower mean (-0.02), within the noise
    assert not clear_win(base + 0.1, base)


def test_a_guarded_move_must_win_on_every_sample_for_unanimous():
    import numpy as np

    from benchmarks.knot_rules import wins

    base = np.array([1.0, 1.0, 1.0, 1.0])
    assert wins(np.array([0.5, 0.5, 0.5, 1.1]), base, 0.5) and not wins(np.array([0.5, 0.5, 0.5, 1.1]), base, 1.0)
    assert wins(np.array([0.9, 0.9, 0.9, 0.9]), base, 1.0)
    assert not wins(np.array([0.1, 1.1, 1.1, 1.1]), base, 0.5)  # a lower mean alone is not enough
    assert not wins(np.array([1.2, 0.9, 0.9, 0.9]), base, 1.0)  # nor three of four samples


def test_skipping_every_evaluation_prompt_is_refused(capsys):
    from benchmarks import knot_rules

    assert knot_rules.main(["--quick", "--random-weights", "--skip-eval-prompts", "1"]) == 2
    assert "--skip-eval-prompts 1 leaves no evaluation prompt of --eval-prompts 1" in capsys.readouterr().err
