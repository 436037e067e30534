"""The README's first command: ``scripts/demo`` on the bundled trained tiny FLUX, through a real server.

- ``parse_prompt`` (``demo/tiny_data.py``): the strict prompt grammar of the trained model.
- ``OTCache Tiny FLUX (trained)`` called from Python: loads the bundled weights into ComfyUI's
  FLUX class, encodes the prompt, gives a latent of the trained size and a decoder that
  VAEDecode / VAEEncode use; a missing or malformed weights file stops with a message that
  says what to do.
- ``example_workflows/tiny-flux-trained-demo.json``: the graph the script queues.
- ``scripts/demo --no-serve`` with a small configuration against a real ComfyUI server: the
  table has full compute and three budgets; every cached sampling computed exactly the
  Budget Slider's K steps (the Cached Model's report); PSNR at the highest budget is
  finite; full compute is exact against itself and bit-identical when sampled again after
  ComfyUI's cache is cleared.
"""
from __future__ import annotations

from devtools.host import REPO_ROOT

import json
import math
import os
import re
import subprocess
import sys

import comfy.model_base
import comfy.sample
import nodes as comfy_nodes
import numpy as np
import pytest
import torch
from test_example_workflows import FOLDER, _link_source, load, to_api_prompt, widgets  # noqa: F401

from comfyui_otcache.demo import adapters, tiny_data
from comfyui_otcache.demo.tiny import token_layout
from comfyui_otcache.demo.tiny_data import Prompt, PromptSyntaxError, parse_prompt
from comfyui_otcache.nodes.demo import OTCacheTinyFlux, TinyFluxDecoder, TinyFluxWeightsError, load_tiny_flux
from devtools.server import free_port

WORKFLOW = "tiny-flux-trained-demo"
SCRIPT = REPO_ROOT / "scripts" / "demo"


# ---------------------------------------------------------------- parse_prompt


def test_parse_prompt_reads_what_prompt_text_writes():
    assert parse_prompt("stripes background; red circle, any square") == Prompt(
        "stripes", (("red", "circle"), ("any", "square")))
    rng = np.random.default_rng(3)
    for _ in range(300):
        prompt = tiny_data.random_prompt(rng)
        assert parse_prompt(prompt.text()) == prompt


def test_parse_prompt_ignores_case_and_spacing_only():
    assert parse_prompt("  Any BACKGROUND ;GREEN  bar ,  any any,black triangle ") == Prompt(
        "any", (("green", "bar"), ("any", "any"), ("black", "triangle")))


@pytest.mark.parametrize("text, problem", [
    ("", "it is empty"),
    ("stripes background red circle", "no ';'"),
    ("stripes; red circle", "before ';' write '<background> background'"),
    ("stripes background;", "no object after ';'"),
    ("stars background; red circle", "unknown background 'stars'"),
    ("any background; purple circle", "unknown colour 'purple'"),
    ("any background; red star", "unknown shape 'star'"),
    ("any background; circle red", "the colour comes first"),
    ("any background; red", "each object is '<colour> <shape>'"),
    ("any background; red circle,", "object 2 is empty"),
    ("any background; red circle, blue bar, any any, black square", "4 objects; at most 3"),
    ("solid background; red circle; blue bar", "2 ';'"),
])
def test_parse_prompt_rejects_bad_text_listing_the_allowed_words(text, problem):
    with pytest.raises(PromptSyntaxError) as raised:
        parse_prompt(text)
    message = str(raised.value)
    assert problem in message
    for kind in (tiny_data.BACKGROUNDS, tiny_data.COLOUR_NAMES, tiny_data.SHAPES):
        assert all(word in message for word in kind)
    assert tiny_data.PROMPT_EXAMPLE in message
    assert isinstance(raised.value, ValueError)


# ---------------------------------------------------------------- the node, called from Python


def test_tiny_flux_node_schema():
    schema = OTCacheTinyFlux.define_schema()
    assert schema.category == "OTCache/demo"
    _, meta = load_tiny_flux()  # the description states the shipped weights' size
    assert f"{int(meta['params']) / 1e6:.1f}M-parameter FLUX" in schema.description and "CPU" in schema.description
    assert [i.id for i in schema.inputs] == ["prompt", "negative", "batch_size"]
    assert all(i.tooltip for i in schema.inputs)
    assert [o.io_type for o in schema.outputs] == ["MODEL", "CONDITIONING", "CONDITIONING", "LATENT", "VAE"]


def test_tiny_flux_node_gives_a_trained_flux_that_samples_and_decodes():
    model, positive, negative, latent, vae = OTCacheTinyFlux.execute(
        "checker background; yellow diamond", "", 2).result
    assert isinstance(model.model, comfy.model_base.Flux)
    _, meta = load_tiny_flux()
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    if "params" in meta:
        assert params == int(meta["params"])
    encoder = tiny_data.PromptEncoder(layout=token_layout(meta))  # the layout it was trained with
    assert torch.equal(positive[0][0], encoder(parse_prompt("checker background; yellow diamond"))[None])
    assert torch.equal(negative[0][0], encoder.null()[None])  # empty negative: the empty prompt of training
    assert latent["samples"].shape == (2, tiny_data.CHANNELS, tiny_data.LATENT, tiny_data.LATENT)
    assert isinstance(vae, TinyFluxDecoder)
    # Re-running the node reuses the loaded model (one per weights file version).
    assert OTCacheTinyFlux.execute("any background; any any", "", 1).result[0] is model

    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    samples = comfy.sample.sample(model, noise, 4, 1.0, "euler", "simple", positive, negative, latent["samples"],
                                  disable_pbar=True, seed=0)
    image = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0]
    assert image.shape == (2, tiny_data.IMAGE, tiny_data.IMAGE, 3)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.01
    # VAEEncode gives the KSampler's latent space back (so img2img with denoise < 1 works).
    encoded = comfy_nodes.VAEEncode().encode(vae, image)[0]["samples"]
    assert torch.allclose(vae.decode(encoded), image, atol=1e-5)
    assert vae.spacial_compression_decode() == tiny_data.PATCH


def test_tiny_flux_node_validates_prompts_before_running():
    assert OTCacheTinyFlux.validate_inputs("solid background; red circle", "") is True
    message = OTCacheTinyFlux.validate_inputs("solid background; red cirle", "")
    assert isinstance(message, str) and "unknown shape 'cirle'" in message and "did you mean 'circle'" in message
    assert "unknown background" in OTCacheTinyFlux.validate_inputs("solid background; red circle", "foo background; any any")
    with pytest.raises(PromptSyntaxError):
        OTCacheTinyFlux.execute("red circle", "", 1)


def test_missing_weights_say_where_and_how_to_get_them(tmp_path, monkeypatch):
    missing = tmp_path / "flux.safetensors"
    monkeypatch.setattr(adapters, "TINY_FLUX_WEIGHTS", missing)
    with pytest.raises(TinyFluxWeightsError) as raised:
        OTCacheTinyFlux.execute("any background; any any", "", 1)
    message = str(raised.value)
    assert str(missing) in message and "git clone" in message and "benchmarks/tiny/train.py" in message
    assert OTCacheTinyFlux.fingerprint_inputs("any background; any any", "", 1) == "missing"


def test_weights_without_arch_metadata_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "flux.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"family": "flux"})
    with pytest.raises(TinyFluxWeightsError, match="no 'arch' metadata"):
        load_tiny_flux(path)


def test_a_replaced_weights_file_reruns_the_node(tmp_path, monkeypatch):
    copy = tmp_path / "flux.safetensors"
    copy.write_bytes(adapters.TINY_FLUX_WEIGHTS.read_bytes())
    monkeypatch.setattr(adapters, "TINY_FLUX_WEIGHTS", copy)
    before = OTCacheTinyFlux.fingerprint_inputs("any background; any any", "", 1)
    first, _ = load_tiny_flux()
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert OTCacheTinyFlux.fingerprint_inputs("any background; any any", "", 1) != before
    assert load_tiny_flux()[0] is not first


# ---------------------------------------------------------------- the workflow the script queues


def test_demo_workflow_is_the_whole_pipeline_with_a_full_compute_row():
    workflow = load(FOLDER / f"{WORKFLOW}.json")
    assert (FOLDER / f"{WORKFLOW}.jpg").is_file()
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node)
    (loader,) = by_type["OTCacheTinyFlux"]
    (reference,) = by_type["OTCacheReference"]
    (anchor,) = by_type["OTCacheAnchorSearch"]
    assert parse_prompt(loader["widgets_values"][0]) and loader["widgets_values"][0] == tiny_data.PROMPT_EXAMPLE
    calibrated, searched = widgets(reference), widgets(anchor)
    assert calibrated["edge_cost"] == "global" and calibrated["budget"] == 0 and calibrated["seeds"] == 1
    assert 2 <= calibrated["max_skip"] <= 5 and searched["trials"] <= 10 and searched["metric"] == "ssim"
    assert _link_source(workflow, anchor["id"], "reference") == (reference["id"], 0)
    assert _link_source(workflow, anchor["id"], "vae") == (loader["id"], 4)
    sliders = sorted(by_type["OTCacheBudgetSlider"], key=lambda n: widgets(n)["speedup"])
    assert [widgets(s)["speedup"] for s in sliders] == [2.0, 3.0, 4.5]
    full_rows = 0
    for sampler in by_type["KSampler"]:
        sampled = widgets(sampler)
        for key in ("seed", "sampler_name", "scheduler", "steps", "cfg"):
            assert sampled[key] == calibrated[key] == searched[key], key
        assert (sampled["steps"], sampled["sampler_name"], sampled["scheduler"], sampled["cfg"]) == (28, "euler", "simple", 3)
        for name in ("positive", "negative", "latent_image"):
            assert _link_source(workflow, sampler["id"], name) == _link_source(workflow, reference["id"], name)
        origin, _ = _link_source(workflow, sampler["id"], "model")
        if origin == loader["id"]:
            full_rows += 1
            continue
        cached = next(n for n in workflow["nodes"] if n["id"] == origin)
        assert cached["type"] == "OTCacheCachedModel"
        assert widgets(cached)["reuse"] == calibrated["reuse"] == searched["reuse"]
        slider = next(n for n in workflow["nodes"] if n["id"] == _link_source(workflow, cached["id"], "schedule")[0])
        assert slider["type"] == "OTCacheBudgetSlider" and widgets(slider)["steps"] == 28
        assert _link_source(workflow, slider["id"], "reference") == (reference["id"], 0)
        assert _link_source(workflow, slider["id"], "anchor") == (anchor["id"], 0)
    assert full_rows == 1 and len(by_type["KSampler"]) == 4 and len(by_type["SaveImage"]) == 4


@pytest.mark.server
def test_the_server_refuses_a_bad_prompt_when_it_is_queued(comfy_server, object_info):
    """validate_inputs runs at /prompt: the error names the problem and the allowed words, nothing runs."""
    workflow = load(FOLDER / f"{WORKFLOW}.json")
    loader = next(node for node in workflow["nodes"] if node["type"] == "OTCacheTinyFlux")
    loader["widgets_values"][0] = "stripes background; red star"
    with pytest.raises(RuntimeError) as raised:
        comfy_server.post("/prompt", {"prompt": to_api_prompt(workflow, object_info)})
    message = str(raised.value)
    assert "400" in message and "unknown shape 'star'" in message and "triangle" in message


@pytest.mark.slow  # a subprocess
def test_scripts_demo_refuses_a_bad_prompt_before_starting_anything():
    done = subprocess.run([sys.executable, str(SCRIPT), "--skip-setup", "--no-serve", "--prompt", "any background; red star"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown shape 'star'" in done.stderr and "Allowed words" in done.stderr and "starting ComfyUI" not in done.stderr


# ---------------------------------------------------------------- scripts/demo against a real server


def table_rows(stdout: str) -> list[list[str]]:
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| budget")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]


@pytest.mark.server
@pytest.mark.slow
def test_scripts_demo_runs_the_pipeline_through_a_real_server(tmp_path):
    result_file = tmp_path / "results.json"
    repeats = 2
    cmd = [sys.executable, str(SCRIPT), "--no-serve", "--port", str(free_port()), "--workdir", str(tmp_path / "comfy"),
           "--json", str(result_file), "--prompt", "rings background; white square, any circle",
           "--steps", "12", "--max-skip", "3", "--trials", "3", "--anchor-seeds", "1", "--repeats", str(repeats),
           "--speedups", "2", "3", "4", "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = tmp_path / "comfy" / "comfyui.log"
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log.read_text()[-4000:] if log.exists() else ''}"
    out = done.stdout

    # The printed table: full compute and three budgets; what each cached sampling computed is the slider's K.
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["full compute", "2x", "3x", "4x"], out
    for label, schedule, k_of_n, computed, seconds, speedup, ideal, db, ssim in rows[1:]:
        k, n = map(int, k_of_n.split("/"))
        assert n == 12 and len(schedule.split(":")[1].split(",")) == k
        assert computed == f"{k}/{n}", f"{label}: computed {computed}, schedule K/N {k_of_n}"
        assert float(seconds) > 0 and math.isclose(float(ideal), n / k, abs_tol=0.01)
        # "1.82x [1.66, 1.98]": median of per-round ratios and their range; above N/K it is shown as noise.
        match = re.search(r"(\d+\.\d+)x \[(\d+\.\d+), (\d+\.\d+)\]", speedup)
        assert match, speedup
        median, low, high = map(float, match.groups())
        assert 0 < low <= median <= high
        assert speedup.startswith("noise (") == (median > n / k * 1.005), speedup
    assert [row[2] for row in rows[1:]] == ["6/12", "4/12", "3/12"]  # K = round(N / speedup)
    assert rows[0][7] == "inf" and rows[0][8] == "1.0000"  # full compute against itself: exact
    assert math.isfinite(float(rows[-1][7]))  # the highest budget: finite PSNR
    assert "identical (PSNR inf)" in out  # full compute again after clearing ComfyUI's cache

    results = json.loads(result_file.read_text())
    assert results["prompt"] == "rings background; white square, any circle" and results["steps"] == 12
    assert results["seeds"] == list(range(repeats + 1))
    assert results["reference"]["k"] == 6 and results["anchor"]["k"] <= 3
    for row in results["rows"][1:]:
        k = row["k"]
        assert k == len(row["schedule"].split(":")[1].split(","))
        # One report per sampling (the pipeline's and each timing prompt's), each exactly K of N computed.
        assert row["computed"] == [k] * (repeats + 1) and row["evaluations"] == [12] * (repeats + 1)
        assert row["reports_per_run"][1:] == [1] * repeats
        assert len(row["seconds"]) == repeats and all(s > 0 for s in row["seconds"])
        assert all(math.isfinite(p) and p > 10 for p in row["psnr"]) and all(0 < s <= 1 for s in row["ssim"])
    full = results["rows"][0]
    assert full["computed"] == [] and all(math.isinf(p) for p in full["psnr"]) and full["ssim"] == [1.0] * (repeats + 1)
    assert results["determinism"] == {"recomputed": True, "psnr": math.inf, "max_abs_diff": 0.0}
    # The highest budget samples faster than full compute (timed by the server, medians of `repeats` prompts).
    assert results["rows"][-1]["measured_speedup"] > 1.0
    assert os.path.getsize(results["picture"]) > 1000
    assert re.search(r"OTCache \[output\] K=3/N=12: computed 3/12 evaluations", log.read_text())
