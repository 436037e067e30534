"""The example workflows in ``example_workflows/`` (ComfyUI's template browser lists them).

They are in the UI (litegraph) format the frontend saves. Checked against a real server's
``/object_info``: every node type exists, every linked input and output slot exists with
the right type, every ``widgets_values`` entry lines up with a widget of the current
schema (no stale or missing widgets) and holds an allowed value. The FLUX.1 [dev],
Qwen-Image and HunyuanVideo 1.5 workflows hold the full OTCache chain (published reference
preset -> Anchor Search -> Budget Slider -> Cached Model -> KSampler, the search fed what the
sampler gets). Both tiny CPU demos are converted to the API format here and run; the
full-chain one runs Reference, Anchor Search, Budget Slider and Cached Model for real.
"""
from __future__ import annotations

from devtools.host import REPO_ROOT

import json
import re
from pathlib import Path

import pytest

from devtools.workflow import CONTROL, FRONTEND_ONLY, WIDGET_TYPES, to_api_prompt, widget_specs  # noqa: F401

FOLDER = REPO_ROOT / "example_workflows"
WORKFLOWS = sorted(FOLDER.glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name"}
MODEL_WORKFLOWS = {
    "otcache-flux1-dev-budget-slider": ("flux1-dev", "EmptySD3LatentImage"),
    "otcache-qwen-image-budget-slider": ("qwen-image", "EmptySD3LatentImage"),
    "otcache-hunyuanvideo-1.5-budget-slider": ("hunyuanvideo-1.5", "EmptyHunyuanVideo15Latent"),
}
TWO_EXPERTS = "otcache-wan2.2-two-experts"
DEMO = "otcache-tiny-demo-cpu"
FULL_CHAIN_DEMO = "otcache-tiny-demo-full-chain"
# widgets_values order of the nodes the file-only checks read by name (checked against the
# server's schema in test_widget_orders_match_the_server).
WIDGET_ORDER = {
    "KSampler": ["seed", f"seed.{CONTROL}", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "OTCacheAnchorSearch": ["seed", "seeds", "sampler_name", "scheduler", "steps", "cfg", "budget", "trials", "reuse",
                            "metric", "storage", "budget_path", "neighbour_evals", "saved_result"],
    "OTCacheReference": ["seed", "seeds", "sampler_name", "scheduler", "steps", "cfg", "budget",
                         "edge_cost", "objective", "max_skip", "reuse", "measure", "saved_result", "tail_batch",
                         "storage"],
    "OTCacheBudgetSlider": ["speedup", "mapping", "steps"],
    "OTCacheSchedulePreset": ["preset"],
    "OTCacheCachedModel": ["reuse", "cache_device", "on_step_mismatch"],
    "OTCacheExpertSplit": ["switch_step", "steps"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", f"noise_seed.{CONTROL}", "steps", "cfg", "sampler_name", "scheduler",
                         "start_at_step", "end_at_step", "return_with_leftover_noise"],
}
SAMPLING = ("seed", "sampler_name", "scheduler", "steps", "cfg")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def by_name(name: str) -> dict:
    return load(FOLDER / f"{name}.json")


def widgets(node: dict) -> dict:
    """A node's widget values by name (WIDGET_ORDER)."""
    names = WIDGET_ORDER[node["type"]]
    values = node.get("widgets_values", [])
    assert len(values) == len(names), f"node {node['id']} ({node['type']}): {values} for widgets {names}"
    return dict(zip(names, values))


# ---------------------------------------------------------------- schema helpers


def input_types(entry: dict) -> dict[str, str]:
    types = {}
    for section in ("required", "optional"):
        for name, spec in entry["input"].get(section, {}).items():
            types[name] = "COMBO" if isinstance(spec[0], list) else spec[0]
    return types


def check_value(node_label: str, name: str, kind: str, options: dict, value) -> list[str]:
    problems = []
    if kind in ("COMBO", CONTROL):
        choices = options.get("options", [])
        if name not in FILE_INPUTS and value not in choices:
            problems.append(f"{node_label}: {name}={value!r} is not one of {choices[:12]}")
    elif kind == "COMFY_DYNAMICCOMBO_V3":
        chosen = [o for o in options.get("options", []) if o.get("key") == value]
        if not chosen:
            problems.append(f"{node_label}: {name}={value!r} is not one of {[o.get('key') for o in options.get('options', [])]}")
        elif any(chosen[0].get("inputs", {}).get(s) for s in ("required", "optional")):
            problems.append(f"{node_label}: {name}={value!r} adds sub-widgets this check does not count")
    elif kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{node_label}: {name}={value!r} is not a number")
        else:
            if kind == "INT" and value != int(value):
                problems.append(f"{node_label}: {name}={value!r} is not a whole number")
            if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
                problems.append(f"{node_label}: {name}={value!r} is outside {options.get('min')}..{options.get('max')}")
    elif kind == "STRING" and not isinstance(value, str):
        problems.append(f"{node_label}: {name}={value!r} is not text")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        problems.append(f"{node_label}: {name}={value!r} is not true/false")
    return problems


def check_workflow(workflow: dict, info: dict) -> list[str]:
    """Everything in a UI-format workflow that the server's current schema does not accept."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        label = f"node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY:
            continue
        entry = info.get(node["type"])
        if entry is None:
            problems.append(f"{label}: missing node type (not in /object_info)")
            continue
        specs = widget_specs(entry)
        values = node.get("widgets_values", [])
        optional = set(entry["input"].get("optional", {}))
        # A workflow saved before optional widgets were added has fewer values: the frontend gives
        # the missing trailing ones their defaults, so that is fine; anything else is stale.
        missing_ok = len(values) < len(specs) and all(name.split(".")[0] in optional for name, _, _ in specs[len(values):])
        if len(values) != len(specs) and not missing_ok:
            problems.append(f"{label}: {len(values)} widgets_values for {len(specs)} widgets {[s[0] for s in specs]}")
        else:
            for (name, kind, options), value in zip(specs, values):
                problems += check_value(label, name, kind, options, value)
        types = input_types(entry)
        linked = set()
        for slot in node.get("inputs", []):
            if slot["name"] not in types:
                problems.append(f"{label}: input {slot['name']!r} does not exist (inputs: {sorted(types)})")
                continue
            if slot.get("link") is None:
                continue
            linked.add(slot["name"])
            link = links.get(slot["link"])
            if link is None:
                problems.append(f"{label}: input {slot['name']} names missing link {slot['link']}")
                continue
            _, origin_id, origin_slot, target_id, _, link_type = link
            origin = nodes.get(origin_id)
            origin_entry = info.get(origin["type"]) if origin else None
            if target_id != node["id"] or origin is None:
                problems.append(f"{label}: link {link[0]} is inconsistent")
            elif origin_entry is not None:
                outputs = origin_entry["output"]
                if origin_slot >= len(outputs):
                    problems.append(f"{label}: link {link[0]} from output {origin_slot} of {origin['type']}, which has {len(outputs)}")
                elif outputs[origin_slot] != types[slot["name"]] or link_type != outputs[origin_slot]:
                    problems.append((f"{label}: input {slot['name']} ({types[slot['name']]}) is fed "
                                     f"{outputs[origin_slot]} (link says {link_type})"))
        widget_names = {s[0] for s in specs}
        for name in entry["input"].get("required", {}):
            if name not in widget_names and name not in linked:
                problems.append(f"{label}: required input {name} is not connected")
        outputs = node.get("outputs", [])
        if len(outputs) > len(entry["output"]):
            problems.append(f"{label}: {len(outputs)} outputs, the node has {len(entry['output'])}")
    return problems


# ---------------------------------------------------------------- files only


def test_the_folder_holds_each_promised_workflow_with_a_thumbnail():
    names = {path.stem for path in WORKFLOWS}
    assert set(MODEL_WORKFLOWS) | {DEMO, FULL_CHAIN_DEMO, TWO_EXPERTS, "otcache-apply-preset-flux1-dev"} <= names
    for path in WORKFLOWS:
        assert (FOLDER / f"{path.stem}.jpg").is_file(), f"{path.stem}.jpg (template browser thumbnail) is missing"
        workflow = load(path)
        assert workflow.get("version") == 0.4 and isinstance(workflow["nodes"], list) and isinstance(workflow["links"], list)
        assert workflow["last_node_id"] >= max(node["id"] for node in workflow["nodes"])
        assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])


def _link_source(workflow: dict, node_id: int, input_name: str) -> tuple[int, int]:
    """(origin node id, origin slot) of the link into ``input_name`` of node ``node_id``."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    slot = next((s for s in nodes[node_id].get("inputs", []) if s["name"] == input_name), None)
    assert slot is not None and slot.get("link") is not None, f"node {node_id} ({nodes[node_id]['type']}): {input_name} is not linked"
    link = links[slot["link"]]
    return link[1], link[2]


def _upstream(workflow: dict, node_id: int, input_name: str) -> dict:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    return nodes[_link_source(workflow, node_id, input_name)[0]]


def _full_chain(workflow: dict) -> dict:
    """The chain's nodes, checked: reference -> Anchor Search -> Budget Slider -> Cached Model -> KSampler,
    with the search fed what the sampler gets (same model before the cache, conditioning, latent, settings)."""
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    cached = _upstream(workflow, sampler["id"], "model")
    assert cached["type"] == "OTCacheCachedModel"
    slider = _upstream(workflow, cached["id"], "schedule")
    assert slider["type"] == "OTCacheBudgetSlider"
    reference = _upstream(workflow, slider["id"], "reference")
    anchor = _upstream(workflow, slider["id"], "anchor")
    assert anchor["type"] == "OTCacheAnchorSearch"
    assert _link_source(workflow, anchor["id"], "reference") == _link_source(workflow, slider["id"], "reference")
    # The search runs the sampler's model as it is before the Cached Model, and the sampler's inputs.
    assert _link_source(workflow, anchor["id"], "model") == _link_source(workflow, cached["id"], "model")
    for name in ("positive", "negative", "latent_image"):
        assert _link_source(workflow, anchor["id"], name) == _link_source(workflow, sampler["id"], name), name
    decode = next(node for node in workflow["nodes"] if node["type"] == "VAEDecode")
    assert _link_source(workflow, anchor["id"], "vae") == _link_source(workflow, decode["id"], "vae")
    assert _link_source(workflow, decode["id"], "samples") == (sampler["id"], 0)
    searched, sampled = widgets(anchor), widgets(sampler)
    assert {k: searched[k] for k in SAMPLING} == {k: sampled[k] for k in SAMPLING}
    assert sampled[f"seed.{CONTROL}"] == "fixed" and sampled["denoise"] == 1.0
    return {"sampler": sampler, "cached": cached, "slider": slider, "reference": reference, "anchor": anchor}


@pytest.mark.parametrize("name", sorted(MODEL_WORKFLOWS))
def test_model_workflows_have_the_full_chain(name):
    """Preset (reference) -> Anchor Search -> Budget Slider -> Cached Model -> KSampler, 50 steps."""
    family, latent = MODEL_WORKFLOWS[name]
    workflow = by_name(name)
    types = [node["type"] for node in workflow["nodes"]]
    assert latent in types and "VAEDecode" in types and "UNETLoader" in types and "VAELoader" in types
    chain = _full_chain(workflow)
    reference, anchor = chain["reference"], chain["anchor"]
    assert reference["type"] == "OTCacheSchedulePreset"
    assert widgets(reference)["preset"].startswith(f"lemica-{family}-50-")
    assert _upstream(workflow, anchor["id"], "vae")["type"] == "VAELoader"
    assert _upstream(workflow, anchor["id"], "latent_image")["type"] == latent
    searched = widgets(anchor)
    # Budget 0 (about N/7), 30 trials, LPIPS; the default SQLite study in the user directory.
    assert (searched["budget"], searched["trials"], searched["metric"], searched["storage"]) == (0, 30, "lpips", "")
    assert searched["reuse"] == widgets(chain["cached"])["reuse"]  # what is measured is what runs
    # The sampler runs the schedules' step count, so nothing is resampled.
    assert widgets(chain["sampler"])["steps"] == 50 and widgets(chain["slider"])["steps"] == 0
    note = next(node for node in workflow["nodes"] if node["type"] == "MarkdownNote")["widgets_values"][0]
    for promise in ("Anchor Search", "resumes", "once per model", "OTCache Reference", "Budget Slider"):
        assert promise in note, f"the note does not mention {promise!r}"


def test_full_chain_demo_is_consistent():
    """Demo model -> Reference -> Anchor Search -> Budget Slider -> Cached Model -> KSampler -> VAEDecode, one setting."""
    workflow = by_name(FULL_CHAIN_DEMO)
    chain = _full_chain(workflow)
    reference, anchor, slider = chain["reference"], chain["anchor"], chain["slider"]
    assert reference["type"] == "OTCacheReference"
    demo = _upstream(workflow, chain["cached"]["id"], "model")
    assert demo["type"] == "OTCacheDemoModel" and demo["widgets_values"][0] == "flux"
    assert _link_source(workflow, anchor["id"], "vae") == (demo["id"], 4)  # the demo's fixed decoder
    for name in ("model", "positive", "negative", "latent_image"):
        assert _link_source(workflow, reference["id"], name) == _link_source(workflow, anchor["id"], name), name
    calibrated, searched, sampled = widgets(reference), widgets(anchor), widgets(chain["sampler"])
    assert {k: calibrated[k] for k in SAMPLING} == {k: sampled[k] for k in SAMPLING}
    assert sampled["steps"] == 8 and sampled["sampler_name"] == "euler" and sampled["scheduler"] == "simple"
    assert (calibrated["seeds"], calibrated["budget"], calibrated["edge_cost"], calibrated["max_skip"]) == (1, 0, "global", 3)
    assert (searched["seeds"], searched["budget"], searched["trials"], searched["metric"]) == (1, 3, 4, "ssim")
    assert widgets(slider) == {"speedup": 2.0, "mapping": "linear", "steps": 8}
    assert calibrated["reuse"] == searched["reuse"] == widgets(chain["cached"])["reuse"]


def test_two_expert_workflow_splits_one_schedule_over_both_passes():
    """Wan 2.2: Preset -> Split for Two Experts -> a Cached Model per expert -> two KSamplerAdvanced whose
    switch (end_at_step = start_at_step) and steps are the split's."""
    workflow = by_name(TWO_EXPERTS)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    split = next(n for n in workflow["nodes"] if n["type"] == "OTCacheExpertSplit")
    assert _upstream(workflow, split["id"], "schedule")["type"] == "OTCacheSchedulePreset"
    samplers = sorted((n for n in workflow["nodes"] if n["type"] == "KSamplerAdvanced"),
                      key=lambda n: widgets(n)["start_at_step"])
    assert len(samplers) == 2
    high, low = (widgets(n) for n in samplers)
    cut = widgets(split)
    assert high["end_at_step"] == low["start_at_step"] == cut["switch_step"]
    assert high["steps"] == low["steps"] == cut["steps"] and high["start_at_step"] == 0
    assert (high["add_noise"], high["return_with_leftover_noise"], low["add_noise"]) == ("enable", "enable", "disable")
    assert _upstream(workflow, samplers[1]["id"], "latent_image")["id"] == samplers[0]["id"]
    experts = []
    for sampler in samplers:
        cached = _upstream(workflow, sampler["id"], "model")
        assert cached["type"] == "OTCacheCachedModel" and _upstream(workflow, cached["id"], "schedule")["id"] == split["id"]
        experts.append(_upstream(workflow, cached["id"], "model")["id"])
    loaders = {nodes[_upstream(workflow, e, "model")["id"]]["widgets_values"][0] for e in experts}
    assert len(loaders) == 2 and any("high_noise" in name for name in loaders)  # two different experts


def test_schedules_travel_inside_the_workflow_files():
    """No workflow needs a schedule file: every schedule is a preset name or text in a widget."""
    for path in WORKFLOWS:
        for node in load(path)["nodes"]:
            assert node["type"] != "OTCacheScheduleLoad", f"{path.name} loads a schedule file"


# ---------------------------------------------------------------- against the server


@pytest.mark.server
@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_matches_the_server_schema(object_info, path):
    problems = check_workflow(load(path), object_info)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.server
def test_schema_check_catches_stale_workflows(object_info):
    workflow = by_name(DEMO)
    slider = next(node for node in workflow["nodes"] if node["type"] == "OTCacheBudgetSlider")
    slider["widgets_values"].append(1)
    workflow["nodes"].append({"id": 99, "type": "OTCacheNoSuchNode", "inputs": [], "widgets_values": []})
    problems = "\n".join(check_workflow(workflow, object_info))
    assert "4 widgets_values for 3 widgets" in problems and "OTCacheNoSuchNode" in problems
    # The frontend gives a `seed` input a control widget unless its spec turns it off: counted.
    workflow = by_name(FULL_CHAIN_DEMO)
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    del sampler["widgets_values"][1]
    assert "6 widgets_values for 7 widgets" in "\n".join(check_workflow(workflow, object_info))


@pytest.mark.server
def test_widget_orders_match_the_server(object_info):
    """The widget names the file-only checks read values by are the server's, in its order."""
    for node_type, names in WIDGET_ORDER.items():
        assert [spec[0] for spec in widget_specs(object_info[node_type])] == names, node_type


@pytest.mark.server
def test_template_routes_serve_the_workflows(comfy_server):
    listed = comfy_server.get("/workflow_templates")
    pack = next((key for key, names in listed.items() if DEMO in names), None)
    assert pack is not None, f"the pack's templates are not listed: {listed}"
    assert sorted(listed[pack]) == sorted(path.stem for path in WORKFLOWS)
    for path in WORKFLOWS:
        assert comfy_server.get(f"/api/workflow_templates/{pack}/{path.name}") == load(path)


@pytest.mark.server
def test_tiny_demo_runs_on_cpu(comfy_server, object_info):
    prompt = to_api_prompt(by_name(DEMO), object_info)
    before = comfy_server.log()
    comfy_server.run_prompt(prompt)
    new = comfy_server.log()[len(before):]
    # speedup 2.0 at steps 10: K = 5 of N = 10 computed steps.
    assert re.search(r"OTCache \[output\] K=5/N=10: computed 5/10 evaluations", new), new[-3000:]


@pytest.mark.server
def test_full_chain_demo_runs_on_cpu(comfy_server, object_info):
    """Reference (global, N=8) -> Anchor Search (4 trials, SSIM) -> Budget Slider -> Cached Model, run for real.

    Run as a workflow saved before Anchor Search gained its optional budget_path,
    neighbour_evals and saved_result inputs (their widget values dropped): it passes the schema check, the
    server takes it and the inputs' defaults apply (the path is measured).
    """
    workflow = by_name(FULL_CHAIN_DEMO)
    chain = _full_chain(workflow)
    chain["anchor"]["widgets_values"] = chain["anchor"]["widgets_values"][:-3]
    assert check_workflow(workflow, object_info) == []
    prompt = to_api_prompt(workflow, object_info)
    assert "budget_path" not in prompt[str(chain["anchor"]["id"])]["inputs"]
    before = comfy_server.log()
    entry = comfy_server.run_prompt(prompt, timeout=240)
    new = comfy_server.log()[len(before):]
    assert entry["status"]["status_str"] == "success"
    outputs = entry["outputs"]

    def schedule_of(node):
        return outputs[str(node["id"])]["otcache_schedule"][0]

    # The Reference reports its schedule as text ("OTCache Reference K=4/N=8 (2.00x): 8:...").
    reference_text = outputs[str(chain["reference"]["id"])]["text"][0]
    assert re.search(r"K=4/N=8\b", reference_text), reference_text  # budget 0 = a conservative N/2
    anchor, sliced = schedule_of(chain["anchor"]), schedule_of(chain["slider"])
    assert anchor["steps"] == sliced["steps"] == 8
    assert len(anchor["compute"]) == 3  # the anchor's budget
    assert anchor["metrics"]["metric"] == "1-ssim"  # asked for: no LPIPS download
    # speedup 2.0 at 8 steps: K = 4; the Cached Model runs exactly the slider's schedule.
    k = len(sliced["compute"])
    assert k == 4
    assert re.search(rf"OTCache \[output\] K={k}/N=8: computed {k}/8 evaluations", new), new[-3000:]
    saved = outputs[str(next(n["id"] for n in workflow["nodes"] if n["type"] == "SaveImage"))]["images"]
    assert len(saved) == 1 and saved[0]["filename"].endswith(".png")
