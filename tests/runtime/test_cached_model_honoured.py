"""Never silently slow: after each run the Cached Model checks that its schedule is what ran."""
from __future__ import annotations

import logging

import comfy.patcher_extension
import pytest
import torch
from sampling import count_block_stack_calls, sample

from comfyui_otcache.demo.tiny_models import build_tiny_model
from comfyui_otcache.otcache_comfy.cache_runtime import apply_otcache, block_layout
from comfyui_otcache.otcache_core.schedule import Schedule

STEPS = 8
SCHEDULE = Schedule.parse("8:0,1,3,7")


@pytest.fixture(scope="module")
def flux():
    return build_tiny_model("flux", seed=0, scale=0.5)


def run(model, caplog):
    reports = []
    model = model.clone()
    config = model.model_options["transformer_options"]["otcache"]
    model.model_options["transformer_options"]["otcache"] = type(config)(**{**config.__dict__, "on_report": reports.append})
    with caplog.at_level(logging.WARNING, logger="otcache"):
        sample(model, "flux", steps=STEPS)
    return reports[-1]


@pytest.mark.parametrize("reuse", ["block", "output"])
def test_an_honoured_schedule_gives_no_warning(flux, caplog, reuse):
    report = run(apply_otcache(flux, SCHEDULE, reuse=reuse), caplog)
    assert report.warning == "" and "WARNING" not in report.text()
    assert (report.computed, report.skipped) == (SCHEDULE.budget, STEPS - SCHEDULE.budget)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_block_patches_replaced_by_a_later_node_are_reported(flux, caplog):
    cached = apply_otcache(flux, SCHEDULE, reuse="block")
    later = cached.clone()
    for kind, index in block_layout(flux.model.diffusion_model).keys:  # another pack's patches, set afterwards
        later.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", kind, index)
    with count_block_stack_calls(flux) as counter:
        report = run(later, caplog)
    assert counter["calls"] == STEPS  # every step ran the blocks: the speedup silently disappeared ...
    assert report.evaluations == 0 and "never reached OTCache's block patches" in report.warning
    assert any("WARNING" in r.getMessage() for r in caplog.records)  # ... and now the log says so


def test_a_forward_that_bypasses_the_hooks_is_reported(flux, caplog):
    cached = apply_otcache(flux, SCHEDULE, reuse="output")
    bypass = cached.clone()
    inner = flux.model.diffusion_model

    class Bypass(torch.nn.Module):  # calls the transformer without the wrappers it was given
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.dtype = inner.dtype

        def forward(self, *args, transformer_options=None, **kwargs):
            options = {k: v for k, v in (transformer_options or {}).items() if k != "wrappers"}
            return self.inner(*args, transformer_options=options, **kwargs)

    bypass.add_object_patch("diffusion_model", Bypass())
    report = run(bypass, caplog)
    assert report.evaluations == 0 and "no transformer evaluation reached OTCache's hooks" in report.warning


def test_a_second_cache_packs_wrapper_that_skips_calls_is_reported(flux, caplog):
    cached = apply_otcache(flux, SCHEDULE, reuse="output")
    other = cached.clone()
    last = {}

    def other_cache(executor, *args, **kwargs):  # a threshold cache outside ours: reuses every second call
        calls = last.setdefault("n", 0)
        last["n"] = calls + 1
        if calls % 2 == 1 and "out" in last:
            return last["out"]
        last["out"] = executor(*args, **kwargs)
        return last["out"]

    wrappers = other.model_options["transformer_options"].setdefault("wrappers", {})
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    wrappers[kind] = {"other_cache": [other_cache], **wrappers.get(kind, {})}  # outermost
    report = run(other, caplog)
    assert "the hooks saw" in report.warning and "of the 8 steps" in report.warning
