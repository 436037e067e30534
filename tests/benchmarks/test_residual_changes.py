from __future__ import annotations

from benchmarks.tiny.common import conditioning, get_family, load_trained, token_layout  # noqa: F401  (ComfyUI import)

import pytest
import torch

from benchmarks.tiny.residual_changes import measure, sample_and_record
from comfyui_otcache.demo.tiny import split_prompts


def _run(residuals, velocities):
    ones = torch.ones(1, 4, dtype=torch.float64)
    return [{"R": r * ones, "R1": r * ones, "v": v * ones, "E": ones} for r, v in zip(residuals, velocities)]


def test_measures_are_the_relative_l1_changes_they_name():
    runs = [_run([1, 2, 3], [1, 2, 4]), _run([2, 3, 4], [1, 2, 4])]
    result = measure(runs, max_gap=2)
    # |X(t) - X(t-1)| / |X(t-1)|, mean over runs
    assert result["step_change"]["R"] == pytest.approx([(1 + 0.5) / 2, (0.5 + 1 / 3) / 2])
    assert result["step_change"]["v"] == pytest.approx([1.0, 1.0])
    # |X(t+g) - X(t)| / |X(t+g)|, mean over runs and t
    assert result["gap_error"]["R"] == pytest.approx([(1 / 2 + 1 / 3 + 1 / 3 + 1 / 4) / 4, (2 / 3 + 2 / 4) / 2])
    # prompts apart / one step apart: R differs by 1 between the runs and moves by 1 a step; v not at all
    assert result["content_share"]["R"] == pytest.approx([1.0, 1.0])
    assert result["content_share"]["v"] == pytest.approx([0.0, 0.0])
    assert result["residual_over_entry"] == pytest.approx([1.5, 2.5, 3.5])


def test_the_recorder_sees_every_step_and_keeps_the_conditioned_half():
    fam = get_family("flux")
    model, meta = load_trained("flux")
    prompts = split_prompts("heldout", 2)
    with_cfg = sample_and_record(model, fam, prompts, 3, 3.0, token_layout(meta), seed=11)
    without = sample_and_record(model, fam, prompts[:1], 3, 1.0, token_layout(meta), seed=11)
    assert [len(run) for run in with_cfg] == [3, 3]
    # Step 0 sees the same noise either way: the cond half under cfg is the cfg-1 call's.
    for key in ("R", "R1", "v", "E"):
        assert torch.allclose(with_cfg[0][0][key], without[0][0][key], atol=1e-4), key
    assert not torch.allclose(with_cfg[0][0]["R"], with_cfg[1][0]["R"])  # another prompt, another residual
