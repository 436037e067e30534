"""Searched schedules travel with the workflow: a saved result is used, without sampling, for the same inputs.

A "second machine" is a fresh ComfyUI user directory (no calibration files, no studies):
the nodes get the workflow the frontend sent (``extra_pnginfo``) with the saved result in
the node's properties, exactly as web/otcache.js stores it after a run.
"""
from __future__ import annotations

import folder_paths
import pytest
import torch
from sampling import conditioning_pair, count_block_stack_calls

from comfyui_otcache.demo.tiny_models import LatentRGBDecoder, build_tiny_model, tiny_latent
from comfyui_otcache.otcache_comfy.anchor_run import anchor_or_saved
from comfyui_otcache.otcache_comfy.reference_build import ReferenceOptions, reference_or_saved, reference_setup
from comfyui_otcache.otcache_comfy.saved_results import LAST_RUN_PROPERTY, find_saved

STEPS = 8


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fresh user directory per call: a new machine without calibration files or studies."""
    count = iter(range(100))

    def new_machine():
        path = tmp_path / f"machine-{next(count)}"
        path.mkdir()
        monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(path))
        return path

    return new_machine


def workflow_with(node_id: int, node_type: str, record: dict) -> dict:
    """The ``extra_pnginfo`` the frontend sends: the workflow, the node's last run in its properties."""
    node = {"id": node_id, "type": node_type, "properties": {LAST_RUN_PROPERTY: {"schedule": "x", "result": record}}}
    return {"workflow": {"nodes": [{"id": 1, "type": "KSampler", "properties": {}}, node]}}


@pytest.mark.slow  # a calibration and a search
def test_reference_and_anchor_travel_to_a_machine_without_calibration_files(machine):
    model = build_tiny_model("flux", seed=0, scale=0.5)
    positive, negative = conditioning_pair("flux", separate=False)
    setup = reference_setup(model, positive, negative, tiny_latent("flux"), "euler", "simple", STEPS, 1.0)
    options = ReferenceOptions(seed=0, seeds=1, budget=5, max_skip=3, measure=False)
    vae = LatentRGBDecoder(16)
    search = dict(seed=0, seeds=1, sampler_name="euler", scheduler="simple", steps=STEPS, cfg=1.0, budget=3,
                  trials=3, metric="ssim", budget_path="off")

    first = machine()
    schedule, heatmap, _, record = reference_or_saved(setup, options, "use if it matches", None, "7")
    anchor, _, _, _, anchor_record = anchor_or_saved("use if it matches", None, "8", model, vae, positive, negative,
                                                     tiny_latent("flux"), reference=schedule, **search)
    assert any(first.rglob("*.safetensors")) and record["for"]["budget"] == 5 and anchor_record["for"]["budget"] == 3

    second = machine()
    reference_workflow = workflow_with(7, "OTCacheReference", record)
    anchor_workflow = workflow_with(8, "OTCacheAnchorSearch", anchor_record)
    with count_block_stack_calls(model) as counter:
        again, heatmap_again, text, _ = reference_or_saved(setup, options, "use if it matches", reference_workflow, "7")
        anchor_again, comparison, plot, anchor_text, _ = anchor_or_saved(
            "use if it matches", anchor_workflow, "8", model, vae, positive, negative, tiny_latent("flux"),
            reference=again, **search)
    assert counter["calls"] == 0 and not any(second.rglob("*"))  # no sampling, no calibration or study files
    assert again == schedule and again.to_dict() == schedule.to_dict() and torch.equal(heatmap_again, heatmap)
    assert anchor_again.to_dict() == anchor.to_dict() and comparison.shape[-1] == 3 and plot.shape[-1] == 3
    assert "used the saved result" in text and "the same prompt" in text and "used the saved result" in anchor_text

    # Another budget, another prompt, or 'recompute': the saved result is not used.
    other = ReferenceOptions(seed=0, seeds=1, budget=4, max_skip=3, measure=False)
    _, _, text, _ = reference_or_saved(setup, other, "use if it matches", reference_workflow, "7")
    assert "used the saved result" not in text
    _, _, text, _ = reference_or_saved(setup, options, "recompute", reference_workflow, "7")
    assert "used the saved result" not in text
    new_prompt = conditioning_pair("flux", separate=True)
    moved = reference_setup(model, *new_prompt, tiny_latent("flux"), "euler", "simple", STEPS, 1.0)
    _, _, text, _ = reference_or_saved(moved, options, "use if it matches", reference_workflow, "7")
    assert "another prompt" in text  # a schedule carries over between prompts, and the node says so


def test_damaged_or_foreign_saved_results_are_ignored():
    for_ = {"model": "m", "budget": 5}
    good = {"format": "otcache.saved-result", "node": "OTCacheReference", "for": for_,
            "schedule": {"format": "otcache.schedule", "version": 1, "steps": 8, "compute": [0, 3, 7]}}
    assert find_saved("use if it matches", workflow_with(7, "OTCacheReference", good), "7", "OTCacheReference", for_)
    for broken in ({**good, "schedule": {"steps": "eight"}}, {**good, "format": "other"}, {**good, "node": "X"},
                   {**good, "for": {"model": "m"}}, "not a record"):
        assert find_saved("use if it matches", workflow_with(7, "OTCacheReference", broken), "7", "OTCacheReference",
                          for_) is None
    assert find_saved("use if it matches", {"workflow": "garbage"}, "7", "OTCacheReference", for_) is None
    assert find_saved("use if it matches", workflow_with(7, "OTCacheReference", good), "9", "OTCacheReference",
                      for_) is None  # another node's
    with pytest.raises(ValueError, match="saved_result must be one of use if it matches, recompute"):
        find_saved("always", None, "7", "OTCacheReference", for_)
