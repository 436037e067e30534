"""load_tiny(family): the one entry point to the trained tiny models, and its prompt splits."""
from __future__ import annotations

import comfy.sample
import pytest
import torch

from comfyui_otcache.demo import tiny_data
from comfyui_otcache.demo.tiny import SHIPPED, TinyWeightsError, load_tiny, split_prompts


@pytest.mark.parametrize("family", SHIPPED)
def test_load_tiny_gives_what_a_ksampler_needs(family):
    tiny = load_tiny(family)
    assert type(tiny.model).__name__ == "ModelPatcher" and tiny.cfg >= 1.0
    latent = tiny.empty_latent(2)
    assert latent["samples"].shape == tiny.family.latent_shape(2)
    positive = tiny.encode(tiny.prompts("heldout", 2))
    negative = tiny.encode(["", ""])  # the empty prompt: cfg's negative
    assert positive[0][0].shape == (2, tiny_data.TOKENS, tiny_data.CONTEXT_DIM)
    assert not torch.equal(positive[0][0], negative[0][0])
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    out = comfy.sample.sample(tiny.model, noise, 4, tiny.cfg, "euler", "simple", positive, negative, latent["samples"],
                              seed=0, disable_pbar=True)
    image = tiny.decode({"samples": out})
    frames = tiny.family.frames if (tiny.family.frames or 1) > 1 else 1
    assert image.shape[0] == 2 * frames and image.shape[-1] == 3
    assert image.min() >= 0 and image.max() <= 1


def test_splits_are_disjoint_and_deterministic():
    train, calibration, heldout = (set(split_prompts(s, 60)) for s in ("train", "calibration", "heldout"))
    assert len(heldout) > 40 and len(calibration) > 40
    # Prompts may repeat by chance (few words), so the splits are different *streams*: compare in order.
    assert [p.text() for p in split_prompts("heldout", 20)] == [p.text() for p in tiny_data.held_out_prompts(20)]
    assert split_prompts("calibration", 20) != split_prompts("heldout", 20) != split_prompts("train", 20)
    assert split_prompts("calibration", 5) == split_prompts("calibration", 5)
    assert split_prompts("train", 12) == tiny_data.sample_batch(0, 0, 12)[0]  # the training stream's first batch
    with pytest.raises(ValueError, match="split must be one of train, calibration, heldout"):
        split_prompts("test", 3)


def test_bad_prompts_and_missing_weights_say_what_to_do(tmp_path):
    tiny = load_tiny("flux")
    with pytest.raises(tiny_data.PromptSyntaxError, match="Allowed words"):
        tiny.encode(["purple background; red circle"])
    with pytest.raises(TinyWeightsError, match="train them"):
        load_tiny("flux", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unknown tiny family"):
        load_tiny("sd15")


def test_weights_of_another_latent_layout_are_refused(tmp_path):
    """A HunyuanVideo trained on 4 frames of 32x32 (before 2026-12-06) has the same parameters as
    today's 2-frame 48x48 one; loading it must fail with the reason, not sample the wrong layout."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from comfyui_otcache.demo.tiny import load_weights, weights_path

    with safe_open(str(weights_path("hunyuan_video")), "pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    assert "clips of 2 frames" in meta["data"] and "latent" not in meta  # the shipped file: no latent key
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata={**meta, "data": "demo/tiny_data.py clips of 4 frames"})
    wanted = r"another latent layout \(.*clips of 4 frames\).*\[16, 2, 24, 24\], 2 frame\(s\) of 48 pixels.*retrain"
    with pytest.raises(TinyWeightsError, match=wanted):
        load_tiny("hunyuan_video", old)
    new_key = tmp_path / "new_key.safetensors"
    save_file(state, str(new_key), metadata={**meta, "latent": "[16, 4, 16, 16]"})
    with pytest.raises(TinyWeightsError, match=r"another latent layout \(\[16, 4, 16, 16\]\)"):
        load_tiny("hunyuan_video", new_key)
    right = tmp_path / "right.safetensors"
    save_file(state, str(right), metadata={**meta, "latent": "[16, 2, 24, 24]"})
    assert load_weights("hunyuan_video", right)[1]["latent"] == "[16, 2, 24, 24]"
