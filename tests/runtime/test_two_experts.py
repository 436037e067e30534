"""Wan 2.2's two experts: one schedule over two KSamplerAdvanced passes, each with its own Cached Model.

The high-noise expert samples steps [0, s), the low-noise expert [s, N) of one N-step sigma
schedule. Each pass finds its slice of the schedule by its sigmas, so both passes together
compute exactly K of N steps (counted at each expert's first transformer block).
"""
from __future__ import annotations

import pytest
import torch
from sampling import count_block_stack_calls, sample

from comfyui_otcache.demo.tiny_models import build_tiny_model
from comfyui_otcache.nodes.schedule_nodes import OTCacheExpertSplit
from comfyui_otcache.otcache_comfy.cache_runtime import apply_otcache, pass_offset
from comfyui_otcache.otcache_core.experts import expert_budgets, split_for_experts
from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError

N, SWITCH = 12, 6
SCHEDULE = Schedule.parse("12:0,1,2,4,7,9,11")  # K = 7; skips step 6, where the low-noise expert starts


@pytest.fixture(scope="module")
def experts():
    """Two tiny Wan 2.1-class models with different weights: the high-noise and the low-noise expert."""
    return build_tiny_model("wan21", seed=0, scale=0.5), build_tiny_model("wan21", seed=1, scale=0.5)


def two_passes(high, low, sampler: str, schedule: Schedule | None, reports: list, cfg: float = 1.0):
    """The Wan 2.2 sampling: high-noise pass to step SWITCH (leftover noise kept), low-noise pass from it."""
    if schedule is not None:
        high = apply_otcache(high, schedule, reuse="block", on_report=reports.append)
        low = apply_otcache(low, schedule, reuse="block", on_report=reports.append)
    with count_block_stack_calls(high) as first, count_block_stack_calls(low) as second:
        latent = sample(high, "wan21", steps=N, sampler=sampler, cfg=cfg, last_step=SWITCH)
        out = sample(low, "wan21", steps=N, sampler=sampler, cfg=cfg, start_step=SWITCH, latent=latent)
    return first["calls"], second["calls"], out


def expected_calls(mask: list[bool], sampler: str, last_pass: bool) -> int:
    """Real evaluations of one pass: heun also evaluates at the next sigma, which belongs to the next step
    (and, at the end of a pass that stops above sigma 0, to the pass's last step)."""
    if sampler != "heun":
        return sum(mask)
    return sum(mask) + sum(mask[1:]) + (0 if last_pass else int(mask[-1]))


def test_split_moves_the_nearest_computed_step_to_the_switch_and_keeps_k():
    split = split_for_experts(SCHEDULE, SWITCH)
    assert split.compute == (0, 1, 2, 4, 6, 9, 11) and split.budget == SCHEDULE.budget
    assert tuple(split.params["moved_step"]) == (7, 6) and expert_budgets(split, SWITCH) == (4, 3)
    assert split_for_experts(split, SWITCH).compute == split.compute  # already computed: unchanged
    assert split_for_experts(Schedule.parse("12:0,11"), SWITCH).compute == (0, 6, 11)  # nothing to move: added
    with pytest.raises(ScheduleError, match="switch_step 12 must be below the schedule's 12 steps"):
        split_for_experts(SCHEDULE, 12)
    with pytest.raises(ScheduleError, match="switch_step must be at least 1"):
        split_for_experts(SCHEDULE, 0)


@pytest.mark.parametrize("sampler", ["euler", "heun", "uni_pc"])
def test_two_experts_together_compute_exactly_k_of_n(experts, sampler):
    high, low = experts
    split = OTCacheExpertSplit.execute(schedule=SCHEDULE, switch_step=SWITCH).args[0]
    reports: list = []
    first, second, out = two_passes(high, low, sampler, split, reports)
    mask = list(split.mask)
    assert first == expected_calls(mask[:SWITCH], sampler, last_pass=False)
    assert second == expected_calls(mask[SWITCH:], sampler, last_pass=True)
    assert [r.span for r in reports] == [(0, SWITCH), (SWITCH, N)]
    assert sum(len(r.steps_computed) for r in reports) == split.budget  # K of N steps over both passes
    assert [r.forced for r in reports] == [0, 0] and all(r.warning == "" for r in reports)
    assert "steps 6-11 (one pass; 3 computed there)" in reports[1].text()
    assert torch.isfinite(out).all()


def test_a_schedule_skipping_the_switch_step_computes_it_and_says_so(experts):
    high, low = experts
    reports: list = []
    first, second, _ = two_passes(high, low, "euler", SCHEDULE, reports)
    assert (first, second) == (4, 3 + 1)  # step 6 has no cache in the low-noise pass: forced
    assert reports[1].forced == 1 and "1 forced by missing cache" in reports[1].text()


def test_full_schedule_over_two_experts_is_bit_identical(experts):
    high, low = experts
    *_, plain = two_passes(high, low, "heun", None, [], cfg=3.0)
    *_, cached = two_passes(high, low, "heun", Schedule.full(N), [], cfg=3.0)
    assert torch.equal(plain, cached)


def test_pass_offset_finds_each_slice_and_nothing_else(experts):
    import comfy.samplers

    model_sampling = experts[0].get_model_object("model_sampling")
    full = comfy.samplers.calculate_sigmas(model_sampling, "simple", N)
    assert pass_offset(full[:SWITCH + 1], model_sampling, N) == 0
    assert pass_offset(full[SWITCH:], model_sampling, N) == SWITCH
    other = comfy.samplers.calculate_sigmas(model_sampling, "simple", 7)  # a 7-step run, not a slice of 12
    assert pass_offset(other, model_sampling, N) is None
