"""OTCache Cached Model: exact transformer call counts, exactness, state lifetime, composition."""
from __future__ import annotations

import gc

import comfy.patcher_extension
import comfy.samplers
import pytest
import torch
from sampling import count_block_stack_calls, evaluations, sample

from comfyui_otcache.demo.tiny_models import build_tiny_model
from comfyui_otcache.nodes.cached_model import OTCacheCachedModel
from comfyui_otcache.otcache_comfy.cache_runtime import (
    STATE_KEY,
    CacheState,
    OTCacheRuntimeError,
    apply_otcache,
    resolve_reuse,
    supports_block_mode,
)
from comfyui_otcache.otcache_core.schedule import Schedule

STEPS = 8
SCHEDULE = Schedule.parse("8:0,1,3,7")  # K = 4 of N = 8
SAMPLERS = ["euler", "heun", "dpmpp_2m", "dpmpp_sde", "uni_pc", "res_multistep"]
# (cfg, separate): cfg 1 drops uncond; 8 vs 40 tokens make ComfyUI call cond and uncond separately.
COND_MODES = {"cfg1": (1.0, False), "batched": (3.0, False), "separate": (3.0, True)}


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_model(family, seed=0, scale=0.5)
        return cache[family]

    return get


def calls_per_evaluation(cfg: float, separate: bool) -> int:
    return 1 if cfg == 1.0 else (2 if separate else 1)


def run_counted(model, family, **kw) -> tuple[int, torch.Tensor]:
    with count_block_stack_calls(model) as counter:
        out = sample(model, family, steps=STEPS, **kw)
    return counter["calls"], out


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cond_mode", list(COND_MODES))
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_flux_block_mode_counts_exactly(models, sampler, cond_mode, batch):
    cfg, separate = COND_MODES[cond_mode]
    base = models("flux")
    per_eval = calls_per_evaluation(cfg, separate)
    plain_calls, _ = run_counted(base, "flux", sampler=sampler, cfg=cfg, separate=separate, batch=batch)
    assert plain_calls == evaluations(sampler, STEPS) * per_eval
    cached = apply_otcache(base, SCHEDULE, reuse="block")
    cached_calls, out = run_counted(cached, "flux", sampler=sampler, cfg=cfg, separate=separate, batch=batch)
    assert cached_calls == evaluations(sampler, SCHEDULE.budget) * per_eval
    assert torch.isfinite(out).all() and out.shape[0] == batch


@pytest.mark.parametrize("family", ["flux", "qwen_image", "hunyuan_video", "wan21"])
def test_auto_reuse_is_output_reuse(models, family):
    """auto follows the trained tiny models, on which output reuse beat block reuse: the same run, bit for bit."""
    base = models(family)
    assert resolve_reuse(base, "auto") == "output"
    auto_calls, auto_out = run_counted(apply_otcache(base, SCHEDULE, reuse="auto"), family, cfg=1.0)
    output_calls, output_out = run_counted(apply_otcache(base, SCHEDULE, reuse="output"), family, cfg=1.0)
    _, block_out = run_counted(apply_otcache(base, SCHEDULE, reuse="block"), family, cfg=1.0)
    assert auto_calls == output_calls == evaluations("euler", SCHEDULE.budget)
    assert torch.equal(auto_out, output_out) and not torch.equal(auto_out, block_out)


@pytest.mark.parametrize("family", ["qwen_image", "hunyuan_video"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_sde"])
@pytest.mark.parametrize("cond_mode", ["batched", "separate"])
def test_other_dits_block_mode_counts_exactly(models, family, sampler, cond_mode):
    cfg, separate = COND_MODES[cond_mode]
    cached = apply_otcache(models(family), SCHEDULE, reuse="block")
    calls, _ = run_counted(cached, family, sampler=sampler, cfg=cfg, separate=separate)
    assert calls == evaluations(sampler, SCHEDULE.budget) * calls_per_evaluation(cfg, separate)


@pytest.mark.parametrize("family", ["wan21", "chroma", "ltxv"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "uni_pc"])
@pytest.mark.parametrize("cond_mode", ["cfg1", "separate"])
def test_block_mode_on_wan_chroma_and_ltxv_counts_exactly(models, family, sampler, cond_mode):
    """The block stack is replaced by its cached residual; embeddings and head run (counted at the first block)."""
    cfg, separate = COND_MODES[cond_mode]
    base = models(family)
    assert supports_block_mode(base) and resolve_reuse(base, "block") == "block"
    plain, _ = run_counted(base, family, sampler=sampler, cfg=cfg, separate=separate)
    assert plain == evaluations(sampler, STEPS) * calls_per_evaluation(cfg, separate)
    reports = []
    cached = apply_otcache(base, SCHEDULE, reuse="block", on_report=reports.append)
    calls, out = run_counted(cached, family, sampler=sampler, cfg=cfg, separate=separate)
    assert calls == evaluations(sampler, SCHEDULE.budget) * calls_per_evaluation(cfg, separate)
    assert torch.isfinite(out).all() and reports[-1].warning == ""


@pytest.mark.parametrize("reuse", ["residual", "output"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "uni_pc"])
@pytest.mark.parametrize("cond_mode", ["cfg1", "separate"])
def test_generic_modes_on_a_family_block_mode_does_not_know(models, reuse, sampler, cond_mode):
    cfg, separate = COND_MODES[cond_mode]
    wan = models("wan21")
    unknown = wan.clone()  # a transformer block mode does not know
    unknown.add_object_patch("diffusion_model", torch.nn.Linear(1, 1))
    assert resolve_reuse(unknown, "auto") == "output"
    with pytest.raises(OTCacheRuntimeError, match="block reuse needs a FLUX, Chroma, HunyuanVideo, Qwen-Image, Wan"):
        apply_otcache(unknown, SCHEDULE, reuse="block")
    calls, out = run_counted(apply_otcache(wan, SCHEDULE, reuse=reuse), "wan21", sampler=sampler, cfg=cfg,
                             separate=separate, batch=3)
    assert calls == evaluations(sampler, SCHEDULE.budget) * calls_per_evaluation(cfg, separate)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family,reuse", [("flux", "block"), ("flux", "residual"), ("flux", "output"),
                                          ("qwen_image", "block"), ("hunyuan_video", "block"),
                                          ("wan21", "output"), ("wan21", "block"), ("chroma", "block"),
                                          ("ltxv", "block")])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_full_schedule_is_bit_identical(models, family, reuse, sampler):
    base = models(family)
    _, plain = run_counted(base, family, sampler=sampler, separate=True)
    calls, full = run_counted(apply_otcache(base, Schedule.full(STEPS), reuse=reuse), family, sampler=sampler,
                              separate=True)
    assert calls == 2 * evaluations(sampler, STEPS)
    assert torch.equal(plain, full)


def reference_euler(model, family, schedule: Schedule, reuse: str, seed: int = 0) -> torch.Tensor:
    """Euler with cfg 1 and step caching, written out by hand on the raw flow prediction.

    x_{i+1} = x_i + v_i (sigma_{i+1} - sigma_i), where v_i is the model's velocity on computed
    steps; a skipped step uses v_c (``output``) or x_i + (v_c - x_c) (``residual``) from the
    last computed step c.
    """
    import comfy.sample
    from sampling import conditioning_pair

    from comfyui_otcache.demo.tiny_models import tiny_latent

    latent = tiny_latent(family)["samples"]
    noise = comfy.sample.prepare_noise(latent, seed)
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", STEPS).to(torch.float32)
    context = conditioning_pair(family, separate=False)[0][0][0]
    dm = model.model.diffusion_model
    x = sampling.noise_scaling(sigmas[0], noise, latent)
    cached = None
    with torch.no_grad():
        for i in range(STEPS):
            sigma = sigmas[i].reshape(1)
            if i in schedule.compute:
                v = dm(x, sampling.timestep(sigma), context, transformer_options={})
                cached = v if reuse == "output" else v - x
            else:
                v = cached if reuse == "output" else x + cached
            x = x + v * (sigmas[i + 1] - sigmas[i])
    return model.model.process_latent_out(sampling.inverse_noise_scaling(sigmas[-1], x))


@pytest.mark.parametrize("reuse", ["output", "residual"])
def test_skipping_matches_a_hand_written_reference_in_fp32(models, reuse):
    # fp32: the model's input is the sampler's own x, so a skipped step that wrote into its
    # input (as core EasyCache does) would corrupt the denoised value and fail this.
    model = models("flux")
    schedule = Schedule.parse("8:0,1,2,4,7")
    got = sample(apply_otcache(model, schedule, reuse=reuse), "flux", steps=STEPS, cfg=1.0)
    want = reference_euler(model, "flux", schedule, reuse)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), float((got - want).abs().max())
    plain = sample(model, "flux", steps=STEPS, cfg=1.0)
    assert torch.allclose(plain, reference_euler(model, "flux", Schedule.full(STEPS), reuse), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, plain, rtol=1e-4, atol=1e-5)  # it really skipped


def test_state_is_freed_after_each_run_and_input_model_untouched(models):
    base = models("flux")
    before = (dict(base.model_options["transformer_options"]), dict(base.wrappers))
    reports = []
    cached = apply_otcache(base, SCHEDULE, reuse="block", on_report=reports.append)
    assert base.model_options["transformer_options"] == before[0] and base.wrappers == before[1]
    sample(cached, "flux", steps=STEPS, separate=True, batch=3)
    gc.collect()
    states = [o for o in gc.get_objects() if isinstance(o, CacheState)]
    assert all(not s.entries and s.sample_sigmas is None for s in states)
    assert STATE_KEY not in cached.model_options["transformer_options"]
    (report,) = reports
    assert (report.computed, report.skipped, report.forced) == (8, 8, 0)
    assert "computed 8/16 evaluations" in report.text()


def test_shape_change_resets_the_cache_instead_of_failing(models):
    reports = []
    cached = apply_otcache(models("flux"), SCHEDULE, reuse="block", on_report=reports.append)
    small = sample(cached, "flux", steps=STEPS, height=8, width=8)
    big = sample(cached, "flux", steps=STEPS, height=16, width=12)
    assert small.shape[-2:] == (8, 8) and big.shape[-2:] == (16, 12)
    assert [r.computed for r in reports] == [4, 4]


def test_split_sampling_two_passes_each_follow_the_schedule(models):
    """KSamplerAdvanced-style split: steps 0-4 then 4-8 of one 8-step run, same cached model.

    Each pass finds its slice of the 8-step schedule by its sigmas (tests/runtime/test_two_experts.py
    for two experts): steps 0-3 compute 0, 1, 3; the second pass starts with an empty cache, so its
    scheduled skip at step 4 is computed (forced), then 5 and 6 reuse it and 7 computes."""
    reports = []
    cached = apply_otcache(models("flux"), SCHEDULE, reuse="block", on_report=reports.append)
    with count_block_stack_calls(cached) as counter:
        first = sample(cached, "flux", steps=STEPS, cfg=1.0, last_step=4)
        sample(cached, "flux", steps=STEPS, cfg=1.0, start_step=4, latent=first)
    assert [r.schedule.steps for r in reports] == [8, 8] and [r.span for r in reports] == [(0, 4), (4, 8)]
    assert [r.computed for r in reports] == [3, 2] and [r.forced for r in reports] == [0, 1]
    assert [sorted(r.steps_computed) for r in reports] == [[0, 1, 3], [4, 7]]
    assert counter["calls"] == 5


def test_denoise_below_one_and_step_mismatch(models):
    reports = []
    base = models("flux")
    cached = apply_otcache(base, Schedule.parse("16:0,1,2,3,5,8,11,15"), reuse="block", on_report=reports.append)
    sample(cached, "flux", steps=STEPS, denoise=0.6)
    assert reports[-1].schedule.steps == STEPS and reports[-1].schedule.budget == 4
    strict = apply_otcache(base, Schedule.parse("16:0,1,2,3,5,8,11,15"), on_step_mismatch="error")
    with pytest.raises(OTCacheRuntimeError, match="made for 16 steps but the sampler runs 8 steps"):
        sample(strict, "flux", steps=STEPS)


def test_applying_twice_replaces_the_first_schedule(models):
    base = models("flux")
    twice = apply_otcache(apply_otcache(base, Schedule.full(STEPS), reuse="block"), SCHEDULE, reuse="block")
    calls, _ = run_counted(twice, "flux", cfg=1.0)
    assert calls == SCHEDULE.budget
    wrappers = twice.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "otcache")
    assert len(wrappers) == 1


def test_node_execute_outside_a_server(models):
    base = models("flux")
    schema = OTCacheCachedModel.define_schema()
    assert [i.id for i in schema.inputs] == ["model", "schedule", "reuse", "cache_device", "on_step_mismatch"]
    out = OTCacheCachedModel.execute(model=base, schedule=SCHEDULE, reuse="auto", cache_device="cpu")
    patched = out.result[0]
    assert patched is not base
    calls, _ = run_counted(patched, "flux", cfg=1.0)
    assert calls == SCHEDULE.budget
    with pytest.raises(OTCacheRuntimeError, match="cache_device must be one of model, cpu"):
        OTCacheCachedModel.execute(model=base, schedule=SCHEDULE, cache_device="gpu")
    with pytest.raises(OTCacheRuntimeError, match="must be an OTCache Schedule"):
        OTCacheCachedModel.execute(model=base, schedule="8:0,7")


def test_run_stats_are_shown_on_the_node_when_a_server_runs(models, monkeypatch):
    import sys
    import types

    sent = []
    fake = types.SimpleNamespace(send_progress_text=lambda text, node_id: sent.append((node_id, text)))
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=fake)))
    cached = apply_otcache(models("flux"), SCHEDULE, node_id="17")
    sample(cached, "flux", steps=STEPS, cfg=1.0)
    ((node_id, text),) = sent
    assert node_id == "17" and text.startswith("OTCache [output] K=4/N=8: computed 4/8 evaluations, skipped 4")


def test_custom_sigmas_follow_the_schedule_by_sigma(models):
    import comfy.sample
    import comfy.samplers
    from sampling import conditioning_pair

    from comfyui_otcache.demo.tiny_models import tiny_latent

    model = models("flux")
    sigmas = torch.tensor([1.0, 0.97, 0.9, 0.8, 0.62, 0.45, 0.3, 0.12, 0.0])  # 8 hand-made steps
    positive, negative = conditioning_pair("flux", separate=True)
    latent = tiny_latent("flux")["samples"]
    reports = []
    cached = apply_otcache(model, SCHEDULE, on_report=reports.append)
    with count_block_stack_calls(model) as counter:
        comfy.sample.sample_custom(cached, comfy.sample.prepare_noise(latent, 0), 3.0,
                                   comfy.samplers.sampler_object("heun"), sigmas, positive, negative, latent,
                                   disable_pbar=True, seed=0)
    # heun: 2K-1 evaluations, cond and uncond called separately.
    assert counter["calls"] == 2 * (2 * SCHEDULE.budget - 1)
    assert (reports[-1].computed, reports[-1].forced) == (2 * (2 * SCHEDULE.budget - 1), 0)
