"""OTCache Anchor Search node on a tiny FLUX: end-to-end objective, seeds, resume, outputs, errors."""
from __future__ import annotations

import folder_paths
import lpips
import pytest
from sampling import conditioning_pair

from comfyui_otcache.demo.tiny_models import LatentRGBDecoder, build_tiny_model, tiny_latent
from comfyui_otcache.nodes.anchor_search import OTCacheAnchorSearch
from comfyui_otcache.otcache_comfy.anchor_run import run_anchor_search
from comfyui_otcache.otcache_core.schedule import Schedule
from comfyui_otcache.otcache_core.warp import schedule_from_warp, warp

STEPS = 8
REFERENCE = Schedule.parse("8:0,1,2,3,5,7", source="reference")
BUDGET = 3


def random_trunk_lpips():
    """LPIPS on a random AlexNet trunk (no download), the same network every call: seeded."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def setup():
    model = build_tiny_model("flux", seed=0, scale=0.5)
    positive, negative = conditioning_pair("flux", separate=False)
    return dict(model=model, vae=LatentRGBDecoder(16), positive=positive, negative=negative,
                latent_image=tiny_latent("flux"), seed=0, seeds=1, sampler_name="euler", scheduler="simple",
                steps=STEPS, cfg=1.0, reference=REFERENCE)


@pytest.mark.slow  # a real search and its resume: about 25 s
def test_search_is_never_worse_than_its_seeds_and_resumes(setup, user_dir):
    anchor, comparison, plot, text = run_anchor_search(**setup, budget=BUDGET, trials=6,
                                                       lpips_factory=random_trunk_lpips)
    assert anchor.budget == BUDGET and anchor.steps == STEPS and anchor.source == "anchor"
    assert anchor.metrics["metric"] == "lpips-alex" and anchor.metrics["trials"] >= 6
    assert comparison.ndim == 4 and comparison.shape[0] == 1 and comparison.shape[-1] == 3
    assert plot.shape == (1, 360, 640, 3)
    assert "lpips-alex" in text and "NOTE" not in text
    assert (user_dir / "otcache" / "anchor" / "studies.db").is_file()

    # The seeds, measured the same way: the anchor is at least as good as both.
    from comfyui_otcache.otcache_comfy.anchor_run import Objective
    from comfyui_otcache.otcache_comfy.calibration import SamplingSetup
    from comfyui_otcache.otcache_core.perceptual import load_metric

    sampling = SamplingSetup(setup["model"], setup["positive"], setup["negative"], setup["latent_image"], "euler",
                             "simple", STEPS, 1.0)
    objective = Objective(sampling, setup["vae"], [0], "auto", load_metric(lpips_factory=random_trunk_lpips), {})
    objective.references = {0: objective.images(0, None)}
    for seed_schedule in (schedule_from_warp(warp(REFERENCE), BUDGET, STEPS), Schedule.uniform(STEPS, BUDGET)):
        assert anchor.metrics["objective"] <= objective(seed_schedule) + 1e-6

    # Same inputs again: the study resumes from the SQLite file, nothing is re-measured.
    again, *_ = run_anchor_search(**setup, budget=BUDGET, trials=6, lpips_factory=random_trunk_lpips)
    assert again.metrics["objective_calls"] == 0 and again == anchor


@pytest.mark.slow
def test_offline_lpips_falls_back_and_says_so(setup, user_dir):
    def offline():
        raise OSError("cannot download alexnet weights")

    anchor, _, _, text = run_anchor_search(**setup, budget=BUDGET, trials=3, lpips_factory=offline)
    assert anchor.metrics["metric"] == "1-ssim"
    assert "NOTE: LPIPS weights could not be loaded" in text


def test_node_schema_and_errors(setup, user_dir):
    schema = OTCacheAnchorSearch.define_schema()
    assert [o.display_name for o in schema.outputs] == ["anchor", "comparison", "trials"]
    assert {"reference", "budget", "trials", "storage", "vae"} <= {i.id for i in schema.inputs}
    with pytest.raises(ValueError, match=r"anchor budget \(6\) must be below the reference's \(6 of 8 steps\)"):
        run_anchor_search(**setup, budget=6, trials=2)
    with pytest.raises(ValueError, match="reference must be an OTCache schedule"):
        run_anchor_search(**{**setup, "reference": "8:0,7"}, budget=2, trials=2)
