"""benchmarks/held_out_compare.py: the same held-out prompts and seeds as the benchmarks, per prompt."""
from __future__ import annotations

import pytest

from benchmarks import held_out_compare  # imports ComfyUI and the pack first


@pytest.mark.slow  # 15 samplings of the tiny FLUX at 8 steps
def test_a_later_window_of_held_out_prompts_scores_the_same_prompts_and_seeds():
    schedules = ["--schedule", "sparse=8:0,3,7", "--schedule", "dense=8:0,1,2,4,7"]
    whole = held_out_compare.main(["--model", "flux", *schedules, "--first", "0", "--count", "3", "--threads", "1"])
    later = held_out_compare.main(["--model", "flux", *schedules, "--first", "1", "--count", "2", "--threads", "1"])
    assert later["prompts"] == "1-2" and whole["prompts"] == "0-2"
    for name in ("sparse", "dense"):
        assert later["per_prompt"][name] == whole["per_prompt"][name][1:]
    diff = [d - s for d, s in zip(later["per_prompt"]["dense"], later["per_prompt"]["sparse"])]
    assert later["dense_minus_sparse"]["mean"] == pytest.approx(sum(diff) / 2, abs=2e-3)
    assert later["dense_minus_sparse"]["wins"] == sum(d > 0 for d in diff) >= 1  # computing more steps helps


def test_schedules_of_different_lengths_are_refused():
    with pytest.raises(SystemExit, match="one step count"):
        held_out_compare.main(["--model", "flux", "--schedule", "a=8:0,7", "--schedule", "b=6:0,5", "--count", "1"])
