"""The Cached Model inside a real graph: LoRAs, torch.compile, other patches and wrappers."""
from __future__ import annotations

import comfy.patcher_extension
import folder_paths
import nodes as comfy_nodes
import pytest
import torch
from comfy_api.torch_helpers import set_torch_compile_wrapper
from safetensors.torch import save_file
from sampling import count_block_stack_calls, sample

from comfyui_otcache.demo.tiny_models import build_tiny_model
from comfyui_otcache.otcache_comfy.cache_runtime import apply_otcache
from comfyui_otcache.otcache_core.schedule import Schedule

STEPS = 8
SCHEDULE = Schedule.parse("8:0,1,3,7")


@pytest.fixture(scope="module")
def flux():
    return build_tiny_model("flux", seed=0, scale=0.5)


@pytest.fixture
def tiny_lora(tmp_path, monkeypatch, flux):
    """A rank-2 LoRA on two FLUX linear layers, saved where LoraLoaderModelOnly looks."""
    gen = torch.Generator().manual_seed(7)
    sd = {}
    for name in ("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1"):
        weight = flux.model.diffusion_model.get_submodule(name).weight
        sd[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(weight.shape[0], 2, generator=gen) * 0.3
        sd[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(2, weight.shape[1], generator=gen) * 0.3
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.pop("loras", None)
    return "tiny.safetensors"


def load_lora(model, name):
    return comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]


def test_lora_before_or_after_the_node_gives_the_same_result(flux, tiny_lora):
    before = apply_otcache(load_lora(flux, tiny_lora), SCHEDULE)
    after = load_lora(apply_otcache(flux, SCHEDULE), tiny_lora)
    with count_block_stack_calls(flux) as counter:
        out_before = sample(before, "flux", steps=STEPS)
        out_after = sample(after, "flux", steps=STEPS)
    assert counter["calls"] == 2 * SCHEDULE.budget
    assert torch.allclose(out_before, out_after, atol=1e-6)
    without_lora = sample(apply_otcache(flux, SCHEDULE), "flux", steps=STEPS)
    assert not torch.allclose(out_before, without_lora, atol=1e-3)  # the LoRA really applied


@pytest.mark.slow
def test_torch_compile_after_the_node(flux):
    eager = sample(apply_otcache(flux, SCHEDULE), "flux", steps=STEPS)
    reports = []
    compiled = apply_otcache(flux, SCHEDULE, on_report=reports.append).clone()
    set_torch_compile_wrapper(compiled, backend="eager")  # TorchCompileModel's mechanism, no C++ build
    out = sample(compiled, "flux", steps=STEPS)
    assert torch.allclose(out, eager, atol=1e-5)
    assert (reports[-1].computed, reports[-1].skipped) == (SCHEDULE.budget, STEPS - SCHEDULE.budget)


def test_other_patches_and_wrappers_on_the_same_model_keep_running(flux):
    seen = {"post_input": 0, "apply_model": 0, "diffusion_model": 0}

    def post_input(args):  # a ControlNet-style input patch: runs on every evaluation
        seen["post_input"] += 1
        return {**args, "img": args["img"] * 1.0}

    def apply_model_wrapper(executor, *args, **kwargs):
        seen["apply_model"] += 1
        return executor(*args, **kwargs)

    def other_diffusion_wrapper(executor, *args, **kwargs):
        seen["diffusion_model"] += 1
        return executor(*args, **kwargs)

    other = flux.clone()
    other.set_model_post_input_patch(post_input)
    other.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test", apply_model_wrapper)
    other.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", other_diffusion_wrapper)
    cached = apply_otcache(other, SCHEDULE, reuse="block")
    with count_block_stack_calls(flux) as counter:
        sample(cached, "flux", steps=STEPS, cfg=1.0)
    assert counter["calls"] == SCHEDULE.budget
    # Under block reuse everything outside the block stack still runs on every step, skipped or not.
    assert seen == {"post_input": STEPS, "apply_model": STEPS, "diffusion_model": STEPS}


def test_an_existing_block_replace_patch_is_chained_not_dropped(flux):
    hits = []

    def existing(args, extra):  # e.g. a perturbed-attention patch on one block
        hits.append(1)
        return extra["original_block"](args)

    other = flux.clone()
    other.set_model_patch_replace(existing, "dit", "single_block", 0)
    cached = apply_otcache(apply_otcache(other, Schedule.full(STEPS)), SCHEDULE)
    sample(cached, "flux", steps=STEPS, cfg=1.0)
    assert len(hits) == SCHEDULE.budget  # runs on each computed step, exactly once
