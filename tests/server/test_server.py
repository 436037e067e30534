"""Through a real ComfyUI server: the pack's nodes are registered and a workflow using them runs."""
from __future__ import annotations

import re

import pytest
from test_pack_loading import registered_nodes

pytestmark = pytest.mark.server

SCHEDULE_TEXT = "10:0,1,2,5,9"


def test_object_info_lists_every_registered_node(comfy_server):
    info = comfy_server.get("/object_info")
    for cls in registered_nodes():
        schema = cls.define_schema()
        entry = info.get(schema.node_id)
        assert entry is not None, f"{schema.node_id} missing from /object_info"
        assert entry["display_name"] == schema.display_name
        declared = {**entry["input"].get("required", {}), **entry["input"].get("optional", {})}
        assert set(declared) == {i.id for i in schema.inputs}
        required = [i.id for i in schema.inputs if not getattr(i, "optional", False)]
        assert entry["input_order"]["required"] == required
        assert len(entry["output"]) == len(schema.outputs)
    cached = info["OTCacheCachedModel"]
    assert cached["input"]["required"]["schedule"][0] == "OTCACHE_SCHEDULE"
    assert cached["output"] == ["MODEL"] and cached["category"] == "OTCache"


def demo_graph(sampler_nodes: dict) -> dict:
    graph = {
        "1": {"class_type": "OTCacheDemoModel", "inputs": {
            "family": "flux", "weight_seed": 0, "positive": "a red square", "negative": "",
            "width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "OTCacheScheduleFromText", "inputs": {"text": SCHEDULE_TEXT}},
        "3": {"class_type": "OTCacheCachedModel", "inputs": {
            "model": ["1", 0], "schedule": ["2", 0], "reuse": "auto", "cache_device": "model",
            "on_step_mismatch": "resample"}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "otcache_test"}},
    }
    graph.update(sampler_nodes)
    return graph


def run_and_find_report(server, graph) -> str:
    before = server.log()
    server.run_prompt(graph)
    new = server.log()[len(before):]
    found = re.findall(r"OTCache \[\w+\] K=\d+/N=\d+: computed \d+/\d+ evaluations", new)
    assert found, f"no OTCache report in the log:\n{new[-3000:]}"
    return found[-1]


def test_ksampler_workflow_runs_with_the_cached_model(comfy_server):
    graph = demo_graph({"4": {"class_type": "KSampler", "inputs": {
        "model": ["3", 0], "seed": 0, "steps": 10, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "denoise": 1.0}}})
    # cond and uncond have equal token counts, so ComfyUI batches them: one call per step.
    assert run_and_find_report(comfy_server, graph) == "OTCache [output] K=5/N=10: computed 5/10 evaluations"


def test_sampler_custom_advanced_workflow_with_heun(comfy_server):
    graph = demo_graph({
        "5": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
        "6": {"class_type": "CFGGuider", "inputs": {"model": ["3", 0], "positive": ["1", 1],
                                                    "negative": ["1", 2], "cfg": 2.0}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "heun"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": ["3", 0], "scheduler": "simple", "steps": 10,
                                                         "denoise": 1.0}},
        "4": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["5", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0],
            "latent_image": ["1", 3]}},
    })
    # heun evaluates twice per step except the last: 2K-1 of 2N-1.
    assert run_and_find_report(comfy_server, graph) == "OTCache [output] K=5/N=10: computed 9/19 evaluations"
