"""The tiny-model training kit (benchmarks/tiny, demo/tiny_data.py): data determinism, codec round trips, real training steps."""
from __future__ import annotations

from benchmarks.tiny.common import data  # demo/tiny_data.py

import comfy.model_management  # noqa: E402
import pytest  # noqa: E402
import torch

from benchmarks.tiny import common


def test_batches_are_deterministic_and_differ_by_index():
    p1, a = data.sample_batch(3, 5, 4)
    p2, b = data.sample_batch(3, 5, 4)
    _, c = data.sample_batch(3, 6, 4)
    assert [p.text() for p in p1] == [p.text() for p in p2]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (4, 64, 64, 3) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_prompts_leave_layout_open():
    """Same prompt, different streams: different images (positions, sizes, ... are not named)."""
    prompt = data.Prompt("solid", (("red", "circle"),))
    import numpy as np
    x = data.render(prompt, np.random.default_rng(0), "v3")  # v3 leaves place and size open too
    y = data.render(prompt, np.random.default_rng(1), "v3")
    assert float(abs(x - y).mean()) > 0.05


def test_the_background_kind_decides_the_pattern_and_leaves_only_its_colours_open():
    """Data set v3: two renders of one kind share its geometry (where the two colours change), not its colours."""
    import numpy as np
    for kind in data.BACKGROUNDS[1:]:
        a = data._background(np.random.default_rng(0), kind)
        b = data._background(np.random.default_rng(1), kind)
        assert float(abs(a - b).mean()) > 0.02  # other colours
        w = data.background_weights(kind)
        for image in (a, b):  # each pixel is the mix, by the kind's fixed weights, of two colours
            lo, hi = np.unravel_index(w.argmin(), w.shape), np.unravel_index(w.argmax(), w.shape)
            step = (image[hi] - image[lo]) / (w[hi] - w[lo])
            c1, c2 = image[lo] - step * w[lo], image[lo] + step * (1 - w[lo])
            assert np.allclose(image, c1 * (1 - w[..., None]) + c2 * w[..., None], atol=1e-9)
            assert np.linalg.norm(c1 - c2) > 0.3  # the pattern shows (v2's steps were 0.15-0.3)
    assert data.background_weights("solid").max() == 0


def test_prompt_embedding_is_fixed_and_distinguishes_prompts():
    enc1, enc2 = data.PromptEncoder(), data.PromptEncoder()
    p = data.Prompt("stripes", (("blue", "any"), ("any", "triangle")))
    q = data.Prompt("stripes", (("blue", "any"), ("any", "square")))
    assert enc1(p).shape == (data.TOKENS, data.CONTEXT_DIM)
    assert torch.equal(enc1(p), enc2(p))
    assert not torch.equal(enc1(p), enc1(q))


def test_object_tokens_bind_colour_to_shape_and_the_slot_layout_stays_as_it_was():
    """v3 models read one token per object (colour + shape); earlier models keep their separate tokens."""
    obj, slot = data.PromptEncoder(), data.PromptEncoder(layout="slot")
    p = data.Prompt("stripes", (("red", "circle"), ("blue", "square")))
    swapped = data.Prompt("stripes", (("red", "square"), ("blue", "circle")))  # the same words, bound otherwise
    e = obj(p)
    assert torch.allclose(e[2], obj.values["red"] + obj.values["circle"] + obj.slots["object0"])
    assert torch.equal(e[4:], obj.null()[4:])  # 2 objects: bg, count, 2 object tokens, then padding
    assert not torch.equal(obj(swapped), e)
    s = slot(p)  # colour0, shape0, colour1, shape1 as before v3
    assert torch.equal(s[2], slot.values["red"] + slot.slots["colour0"])
    assert torch.equal(s[5], slot.values["square"] + slot.slots["shape1"])
    assert torch.equal(obj.values["red"], slot.values["red"]) and torch.equal(obj.null(), slot.null())
    with pytest.raises(ValueError, match="token layout"):
        data.PromptEncoder(layout="words")


def test_a_model_is_conditioned_with_the_token_layout_it_was_trained_with():
    from comfyui_otcache.demo.tiny import token_layout

    assert token_layout({"prompt_tokens": "object"}) == "object"
    assert token_layout({}) == "slot" and token_layout(None) == "slot"  # weights from before v3
    fam = common.get_family("flux")
    p = data.Prompt("solid", (("red", "circle"),))
    assert torch.equal(common.conditioning(fam, [p], "slot")[0][0], data.PromptEncoder(layout="slot").batch([p]))
    assert not torch.equal(common.conditioning(fam, [p])[0][0], common.conditioning(fam, [p], "slot")[0][0])


def test_codec_round_trip():
    codec = data.PatchCodec()
    m = codec.matrix
    assert torch.allclose(m.T @ m, torch.eye(m.shape[1]), atol=1e-5)
    _, images = data.sample_batch(0, 0, 3)
    z = codec.encode(images)
    assert z.shape == (3, 16, data.LATENT, data.LATENT)
    assert 0.5 < float(z.std()) < 2.0  # about unit variance in the model's internal space
    assert torch.allclose(codec.decode(z, internal=True), images, atol=1e-5)
    # user space (KSampler output, FLUX latent format) decodes to the same pixels
    assert torch.allclose(codec.decode(codec.to_user(z)), images, atol=1e-4)
    assert torch.allclose(codec.to_user(z), z / data.FLUX_SCALE + data.FLUX_SHIFT)
    # latents in the decoder's row space round-trip; the null space decodes to nothing
    w = torch.randn(2, 16, 4, 4)
    proj = torch.einsum("ck,dk,bdhw->bchw", m, m, w)
    assert torch.allclose(codec.encode(codec.decode(proj, internal=True, clamp=False)), proj, atol=1e-4)


def test_clips_move_objects_over_a_fixed_background():
    prompts, clips = data.sample_batch(3, 5, 2, frames=data.CLIP_FRAMES)
    again = data.sample_batch(3, 5, 2, frames=data.CLIP_FRAMES)[1]
    assert clips.shape == (2, data.CLIP_FRAMES, 48, 48, 3) and torch.equal(clips, again)
    moved = (clips[:, 1:] - clips[:, :-1]).abs().amax(dim=(2, 3, 4))
    assert bool((moved > 0.05).all())  # something moves between every pair of frames
    still = (clips[:, 1:] - clips[:, :-1]).abs().sum(-1) == 0
    assert float(still.float().mean()) > 0.3  # ... and most of each frame (the background) does not


def test_object_masks_are_the_pixels_the_objects_paint():
    import numpy as np

    lay = data.layout(data.Prompt("stripes", (("red", "triangle"), ("blue", "bar"))), np.random.default_rng(4))
    painted = (data.draw(lay) != lay.background).any(-1)
    assert np.array_equal(painted, data.object_mask(lay)) and painted.sum() > 100
    plain = data.sample_batch(3, 5, 4)
    prompts, images, masks = data.sample_batch(3, 5, 4, masks=True)
    assert torch.equal(images, plain[1]) and [p.text() for p in prompts] == [p.text() for p in plain[0]]
    assert masks.shape == (4, 64, 64) and masks.dtype == torch.bool
    clips = data.sample_batch(3, 5, 2, frames=data.CLIP_FRAMES, masks=True)
    assert torch.equal(clips[1], data.sample_batch(3, 5, 2, frames=data.CLIP_FRAMES)[1])
    assert clips[2].shape == (2, data.CLIP_FRAMES, 64, 64)
    assert not torch.equal(clips[2][:, 0], clips[2][:, -1])  # the objects move


def test_data_set_v5_draws_every_object_at_the_largest_size_and_keeps_the_rest():
    import numpy as np

    prompt = data.Prompt("rings", (("red", "triangle"), ("any", "any"), ("blue", "bar")))
    v3 = data.layout(prompt, np.random.default_rng(8), "v3")
    v5 = data.layout(prompt, np.random.default_rng(8), "v5")
    assert [item[2] for item in v5.items] == [11.0] * 3 and len({item[2] for item in v3.items}) == 3
    assert np.array_equal(v3.background, v5.background)  # same draws: only the sizes differ
    assert [(item[1], item[3], item[4]) for item in v3.items] == [(item[1], item[3], item[4]) for item in v5.items]
    assert torch.equal(data.sample_batch(3, 5, 4)[1], data.sample_batch(3, 5, 4, data_set=data.DATA_SET)[1])
    with pytest.raises(ValueError, match="unknown data set 'v4'; use one of v3, v5, v6, v7, v8"):
        data.sample_batch(3, 5, 4, data_set="v4")


def test_data_set_v7_lays_every_bar_flat_and_keeps_the_rest():
    import numpy as np

    prompt = data.Prompt("rings", (("red", "bar"), ("any", "bar"), ("blue", "bar")))
    seeds = range(12)
    v6 = [data.layout(prompt, np.random.default_rng(s), "v6") for s in seeds]
    v7 = [data.layout(prompt, np.random.default_rng(s), "v7") for s in seeds]
    assert {item[5] for lay in v6 for item in lay.items} == {0.0, np.pi / 2}
    assert {item[5] for lay in v7 for item in lay.items} == {0.0}
    for a, b in zip(v6, v7):  # same draws: only the bars' orientations differ
        assert np.array_equal(a.background, b.background)
        assert [(i[1], i[2], i[3], i[4]) for i in a.items] == [(i[1], i[2], i[3], i[4]) for i in b.items]
        assert all(np.array_equal(i[0], j[0]) for i, j in zip(a.items, b.items))


def test_data_set_v8_moves_each_clips_objects_at_its_cells_velocity_and_keeps_v7s_images():
    import numpy as np

    prompt = data.Prompt("stripes", (("red", "bar"), ("any", "any"), ("blue", "circle")))
    for s in range(6):
        v7 = data.clip_layout(prompt, np.random.default_rng(s), "v7")
        v8 = data.clip_layout(prompt, np.random.default_rng(s), "v8")
        assert np.array_equal(v8.velocities, np.array(data.CELL_VELOCITIES))
        assert not np.array_equal(v7.velocities, v8.velocities)
        assert np.array_equal(v7.background, v8.background)  # same draws: only the velocities differ
        assert [i[1:] for i in v7.items] == [i[1:] for i in v8.items]
        assert np.array_equal(data.render(prompt, np.random.default_rng(s), "v7"),
                              data.render(prompt, np.random.default_rng(s), "v8"))
    clip = data.render_clip(prompt, np.random.default_rng(0), data_set="v8")
    assert not np.array_equal(clip[0], clip[-1])  # the objects do move


def test_clip_frames_are_drawn_at_64_pixels_and_area_averaged_to_the_families_size():
    import numpy as np

    prompt = data.Prompt("checker", (("red", "square"), ("blue", "diamond")))
    full = data.render_clip(prompt, np.random.default_rng(3), frames=2, size=64)
    half = data.render_clip(prompt, np.random.default_rng(3), frames=2, size=32)
    three_quarters = data.render_clip(prompt, np.random.default_rng(3), frames=2)  # the shipped HunyuanVideo's 48x48
    lay = data.clip_layout(prompt, np.random.default_rng(3))
    assert full.shape == (2, 64, 64, 3) and half.shape == (2, 32, 32, 3) and three_quarters.shape == (2, 48, 48, 3)
    assert np.array_equal(full[1], data.draw(lay, 1))
    assert np.allclose(half, full.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4)))
    # 48 of 64: output pixel (0, 0) covers input pixels [0, 4/3)^2, so weights 1, 1/3 per axis
    w = np.array([1.0, 1.0 / 3.0]) / (4.0 / 3.0)
    assert np.allclose(three_quarters[0, 0, 0], np.einsum("i,j,ijc->c", w, w, full[0, :2, :2]))
    assert np.allclose(three_quarters.mean(axis=(1, 2)), full.mean(axis=(1, 2)))  # area kept
    fam = common.get_family("hunyuan_video")
    assert fam.clip_size == 48 and fam.latent_shape(1) == (1, 16, 2, 24, 24)
    with pytest.raises(ValueError, match="a clip frame of 80 pixels is not in 1-64"):
        data.render_clip(prompt, np.random.default_rng(3), size=80)


def test_weights_without_a_data_set_key_were_trained_on_v3():
    assert data.trained_data_set({"steps": "6000"}) == "v3"
    assert data.trained_data_set(None) == "v3"
    assert data.trained_data_set({"data_set": "v6"}) == "v6"


def test_data_set_v6_puts_every_object_at_its_cells_centre_and_keeps_the_rest():
    import numpy as np

    prompt = data.Prompt("rings", (("red", "triangle"), ("any", "any"), ("blue", "bar")))
    v5 = data.layout(prompt, np.random.default_rng(8), "v5")
    v6 = data.layout(prompt, np.random.default_rng(8), "v6")
    assert [(item[3], item[4]) for item in v6.items] == [tuple(cell) for cell in data.CELLS]
    assert [(item[3], item[4]) for item in v5.items] != [tuple(cell) for cell in data.CELLS]
    assert np.array_equal(v5.background, v6.background)  # same draws: only the places differ
    assert [(item[1], item[2], item[5]) for item in v5.items] == [(item[1], item[2], item[5]) for item in v6.items]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(v5.items, v6.items))  # the colours too


@pytest.mark.parametrize("name", ["flux", "qwen_image", "hunyuan_video"])
def test_object_weights_cover_the_objects_latent_positions(name):
    fam = common.get_family(name)
    codec = common.codec_for(common.build_tiny_model(name, 0))
    prompts, x0, none = common.training_batch(fam, 0, 0, 3, codec)
    assert none is None and torch.equal(x0, common.training_latents(fam, 0, 0, 3, codec)[1])
    _, same, weights = common.training_batch(fam, 0, 0, 3, codec, object_weight=5.0)
    assert torch.equal(same, x0)
    assert weights.ndim == x0.ndim and weights.shape[0] == 3 and weights.shape[1] == 1
    assert weights.shape[2:] == x0.shape[2:]
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    frames = None if (fam.frames or 1) == 1 else fam.frames
    masks = data.sample_batch(0, 0, 3, frames=frames, masks=True)[2]
    # positions whose pixel window is all object (a min pool; windows overlap where 64 / size is not whole)
    all_object = -torch.nn.functional.adaptive_max_pool2d(-masks.reshape(-1, 1, 64, 64).float(), x0.shape[-2:])
    inside = (all_object == 1).reshape(weights.shape)
    assert bool((weights[inside] == 5.0).all())  # every position inside an object is weighted
    share = float((weights == 5.0).float().mean())
    assert 0.05 < share < 0.6  # ... and the background mostly is not


def test_weighted_velocity_loss_is_the_weighted_mean_of_squared_errors():
    fam = common.get_family("flux")
    model = common.build_tiny_model("flux", 0, **fam.arch)
    codec = common.codec_for(model)
    prompts, x0, weights = common.training_batch(fam, 0, 0, 2, codec, object_weight=3.0)
    x0, weights = x0[..., :8, :8], weights[..., :8, :8]
    ctx = common.conditioning(fam, prompts)[0][0]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        plain = common.velocity_loss(model, x0, ctx, noise, sigma)
        ones = common.velocity_loss(model, x0, ctx, noise, sigma, torch.ones_like(weights))
        weighted = common.velocity_loss(model, x0, ctx, noise, sigma, weights)
        s = sigma.view(-1, 1, 1, 1)
        xt = s * noise + (1 - s) * x0
        v = (xt - model.model.apply_model(xt, sigma, c_crossattn=ctx)) / s
        err = (v - (noise - x0)) ** 2
    assert torch.allclose(ones, plain, rtol=1e-5)
    want = (err * weights).sum() / weights.expand_as(err).sum()
    assert torch.allclose(weighted, want, rtol=1e-5) and not torch.allclose(weighted, plain, rtol=1e-3)


@pytest.mark.parametrize("name", ["qwen_image", "hunyuan_video", "wan21"])
def test_video_latents_round_trip_in_the_models_latent_format(name):
    fam = common.get_family(name)
    model = common.build_tiny_model(fam.name, 0)
    codec = common.codec_for(model)
    prompts, z = common.training_latents(fam, 0, 0, 2, codec)
    assert tuple(z.shape) == fam.latent_shape(2)
    frames = codec.decode(codec.to_user(z))  # [B*T, H, W, 3], the IMAGE layout of frames
    t = fam.frames
    if t == 1:
        expected = data.sample_batch(0, 0, 2)[1]
    else:
        size = fam.clip_size  # HunyuanVideo: 2 frames of 48x48
        expected = data.sample_batch(0, 0, 2, frames=t, clip_size=size)[1].reshape(2 * t, size, size, 3)
    assert torch.allclose(frames, expected, atol=1e-4)
    # the latent format really is the family's own (not FLUX's constants)
    assert not torch.allclose(codec.to_user(z), z / data.FLUX_SCALE + data.FLUX_SHIFT)


@pytest.mark.parametrize("name", ["flux", "qwen_image", "hunyuan_video", "wan21"])
def test_one_training_step_on_each_family(name):
    """A real step through apply_model: frozen as loaded, gradients reach the blocks, the loss drops."""
    torch.manual_seed(0)
    fam = common.get_family(name)
    model = common.build_tiny_model(fam.name, 0, **fam.arch)
    dm = model.model.diffusion_model
    assert not any(p.requires_grad for p in dm.parameters())  # ComfyUI loads it frozen
    codec = common.codec_for(model)
    prompts, x0 = common.training_latents(fam, 0, 0, 2, codec)
    x0 = x0[..., :8, :8]
    ctx = common.conditioning(fam, prompts)[0][0]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 0.8])
    common.set_training(model, True)
    try:
        opt = torch.optim.Adam(dm.parameters(), lr=1e-3)
        loss0 = common.velocity_loss(model, x0, ctx, noise, sigma)
        opt.zero_grad()
        loss0.backward()
        grads = [p.grad for p in dm.parameters() if p.grad is not None]
        assert len(grads) > 0.8 * sum(1 for _ in dm.parameters())
        opt.step()
        with torch.no_grad():
            loss1 = common.velocity_loss(model, x0, ctx, noise, sigma)
        assert float(loss1) < float(loss0.detach())
    finally:
        common.set_training(model, False)
    assert comfy.model_management.in_training is False


@pytest.mark.parametrize("name", ["flux", "qwen_image", "hunyuan_video", "wan21"])
def test_training_sigmas_span_the_models_own_schedule(name):
    """t in (0, 1) maps onto the whole sigma range of the model's own shifted schedule.

    HunyuanVideo's model sampling takes timesteps in [0, 1000]: feeding it t in [0, 1]
    trained the first HunyuanVideo run at sigma < 0.01 only.
    """
    model = common.build_tiny_model(name, 0, **common.FAMILIES[name].arch)
    u = torch.tensor([0.02, 0.5, 0.98])
    sigma = common.shifted_sigmas(model, u)
    assert float(sigma[0]) < 0.3 and float(sigma[1]) > 0.5 and float(sigma[2]) > 0.95
    shift = model.model.model_sampling  # the shift pushes the middle up, as at sampling time
    assert float(sigma[1]) == pytest.approx(float(shift.sigma(torch.tensor(0.5) * float(shift.timestep(torch.tensor(1.0))))))


@pytest.mark.parametrize("name", ["flux", "qwen_image", "hunyuan_video", "wan21"])
def test_training_sigmas_reach_the_last_steps(name):
    """Every family trains on the low-noise steps: at least 7% of samples below sigma 0.2.

    Through HunyuanVideo's shift 7 alone only 3.4% would be; its family mixes in uniform sigmas.
    """
    fam = common.FAMILIES[name]
    model = common.build_tiny_model(name, 0, **fam.arch)
    gen = torch.Generator().manual_seed(0)
    sigma = torch.cat([common.training_sigmas(model, fam, 12, gen) for _ in range(400)])
    low = float((sigma < 0.2).float().mean())
    assert low > 0.07
    assert float(sigma.min()) >= 1e-3 and float(sigma.max()) <= 1.0
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(12, generator=gen)
    expected = common.shifted_sigmas(model, u).clamp(1e-3, 1.0)
    k = round(fam.uniform_sigma_share * 12)
    expected[:k] = u[:k].clamp(1e-3, 1.0)
    assert torch.equal(common.training_sigmas(model, fam, 12, torch.Generator().manual_seed(0)), expected)
    if name == "hunyuan_video":
        assert float((common.shifted_sigmas(model, torch.rand(4800, generator=gen)) < 0.2).float().mean()) < 0.05


def test_a_snapshot_of_a_running_training_loads_as_its_ema_weights(tmp_path):
    """benchmarks/tiny/snapshot.py: a train.py checkpoint's EMA weights, loadable by load_tiny's loader."""
    import argparse
    import copy

    from benchmarks.tiny.snapshot import snapshot
    from benchmarks.tiny.train import Checkpoint, run_key, training_arch
    from comfyui_otcache.demo.tiny import load_weights

    args = argparse.Namespace(family="flux", seed=0, steps=100, batch=2, lr=1e-3, ema=0.9, threads=1, arch=None,
                              train_shift="sampling", object_weight=1.0, data_set="v5")
    arch = training_arch(args)
    model = common.build_tiny_model("flux", 0, **arch)
    dm = model.model.diffusion_model
    ema = {k: v + 1.0 for k, v in copy.deepcopy(dm.state_dict()).items()}  # differs from the live weights
    opt = torch.optim.AdamW(dm.parameters(), lr=1e-3)
    Checkpoint(tmp_path / "flux_ckpt", run_key(args)).save(50, dm, ema, opt, torch.Generator(), [1.0], 3.0)
    meta = snapshot(tmp_path / "flux_ckpt", tmp_path / "snap.safetensors")
    assert meta["steps"] == "50" and meta["planned_steps"] == "100" and meta["prompt_tokens"] == "object"
    assert meta["train_shift"] == "sampling" and meta["data_set"] == "v5"
    assert common.sampling_shift(meta) == common.get_family("flux").sampling_shift
    loaded, loaded_meta = load_weights("flux", tmp_path / "snap.safetensors")
    name = "final_layer.linear.weight"
    want = ema[name].to(torch.bfloat16).float()
    assert torch.equal(loaded.model.diffusion_model.state_dict()[name], want)
    assert loaded_meta["family"] == "flux" and common.token_layout(loaded_meta) == "object"


def test_a_model_samples_at_the_shift_its_weights_record(tmp_path):
    """New tiny FLUX weights sample at FLUX's 256-token shift (mu 0.5); weights without the key keep the default."""
    from safetensors.torch import save_file

    from comfyui_otcache.demo.tiny import load_weights

    fam = common.get_family("flux")
    assert fam.sampling_shift == 0.5
    model = common.build_tiny_model("flux", 0, **fam.arch)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    meta = {"family": "flux", "arch": __import__("json").dumps(fam.arch)}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=meta)
    save_file(state, str(tmp_path / "new.safetensors"), metadata={**meta, "sampling_shift": str(fam.sampling_shift)})
    old, old_meta = load_weights("flux", tmp_path / "old.safetensors")
    new, new_meta = load_weights("flux", tmp_path / "new.safetensors")
    assert common.sampling_shift(old_meta) is None and common.sampling_shift(new_meta) == 0.5
    assert old.model.model_sampling.shift == 1.15 and new.model.model_sampling.shift == 0.5
    # A lower shift spends fewer steps at high noise: the second of 28 sigmas drops further.
    import comfy.samplers
    s_old = comfy.samplers.calculate_sigmas(old.model.model_sampling, "simple", 28)
    s_new = comfy.samplers.calculate_sigmas(new.model.model_sampling, "simple", 28)
    assert float(s_old[0]) == pytest.approx(float(s_new[0])) and float(s_new[1]) < float(s_old[1]) - 0.005


@pytest.mark.slow
def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path):
    """train.py stopped at a checkpoint and rerun writes bit-identical weights to an uninterrupted run."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[2]

    def train(out, *extra):
        cmd = [sys.executable, str(repo / "benchmarks" / "tiny" / "train.py"), "--family", "flux", "--steps", "4",
               "--batch", "2", "--threads", "1", "--samples", "1", "--checkpoint-every", "2",
               "--out", str(out), "--weights-out", str(out / "w"), *extra]
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    train(tmp_path / "straight")
    assert "stopped at step 2" in train(tmp_path / "resumed", "--stop-at", "2")
    assert (tmp_path / "resumed" / "flux_ckpt").exists()
    assert "resumed from" in train(tmp_path / "resumed")
    a = load_file(str(tmp_path / "straight" / "w" / "flux.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "w" / "flux.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / "flux_ckpt").exists()  # a finished run removes its checkpoint


def test_training_at_the_sampling_shift_draws_lower_noise_levels_and_keys_its_checkpoint():
    """train.py --train-shift sampling: noise levels through the shift the model samples with, in its own checkpoint."""
    import argparse

    from benchmarks.tiny.train import run_key

    fam = common.get_family("flux")
    model = common.build_tiny_model("flux", 0, **fam.arch)
    default = common.training_sigmas(model, fam, 4096, torch.Generator().manual_seed(0))
    common.set_sampling_shift(model, fam.sampling_shift)  # what train.py does for --train-shift sampling
    sampling = common.training_sigmas(model, fam, 4096, torch.Generator().manual_seed(0))
    uniform = round(fam.uniform_sigma_share * 4096)
    assert torch.equal(default[:uniform], sampling[:uniform])  # the uniform share is the same draw
    assert (sampling[uniform:] < default[uniform:]).all()  # mu 0.5 < FLUX's default 1.15: lower sigma, same t
    runs = (("default", 1.0, "v3"), ("sampling", 1.0, "v3"), ("default", 4.0, "v3"), ("default", 1.0, "v5"))
    keys = {run: run_key(argparse.Namespace(family="flux", seed=0, steps=10, batch=2, lr=1e-3, ema=0.9, threads=1,
                                            arch=None, train_shift=run[0], object_weight=run[1], data_set=run[2]))
            for run in runs}
    assert len(set(keys.values())) == 4  # a checkpoint of one is never resumed as another
    legacy = keys["default", 1.0, "v3"]
    assert "object_weight" not in legacy and "data_set" not in legacy  # older checkpoints still resume
