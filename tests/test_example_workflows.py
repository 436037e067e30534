"""The example workflows in ``example_workflows/`` (ComfyUI's template browser lists them).

They are in the UI (litegraph) format the frontend saves. Checked against a real server's
``/object_info``: every node type exists, every linked input and output slot exists with
the right type, every ``widgets_values`` entry lines up with a widget of the current
schema (no stale or missing widgets) and holds an allowed value. The tiny CPU demo is
converted to the API format here and run.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from host import REPO_ROOT

FOLDER = REPO_ROOT / "example_workflows"
WORKFLOWS = sorted(FOLDER.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # virtual nodes, not in /object_info
FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
CONTROL = "control_after_generate"
MODEL_WORKFLOWS = {
    "otcache-flux1-dev-budget-slider": ("flux1-dev", "EmptySD3LatentImage"),
    "otcache-qwen-image-budget-slider": ("qwen-image", "EmptySD3LatentImage"),
    "otcache-hunyuanvideo-1.5-budget-slider": ("hunyuanvideo-1.5", "EmptyHunyuanVideo15Latent"),
}
DEMO = "otcache-tiny-demo-cpu"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def by_name(name: str) -> dict:
    return load(FOLDER / f"{name}.json")


# ---------------------------------------------------------------- schema helpers


def widget_specs(entry: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of each widget the frontend makes for a node, in widgets_values order."""
    specs = []
    inputs = entry["input"]
    for section in ("required", "optional"):
        for name in entry.get("input_order", {}).get(section, list(inputs.get(section, {}))):
            spec = inputs[section][name]
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("forceInput"):
                continue
            if isinstance(kind, list):
                specs.append((name, "COMBO", {**options, "options": kind}))
            elif kind in WIDGET_TYPES:
                specs.append((name, kind, options))
            else:
                continue
            if options.get(CONTROL):
                specs.append((f"{name}.{CONTROL}", CONTROL, {"options": ["fixed", "increment", "decrement", "randomize"]}))
    return specs


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
        if len(values) != len(specs):
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
                    problems.append(f"{label}: input {slot['name']} ({types[slot['name']]}) is fed {outputs[origin_slot]} (link says {link_type})")
        widget_names = {s[0] for s in specs}
        for name in entry["input"].get("required", {}):
            if name not in widget_names and name not in linked:
                problems.append(f"{label}: required input {name} is not connected")
        outputs = node.get("outputs", [])
        if len(outputs) > len(entry["output"]):
            problems.append(f"{label}: {len(outputs)} outputs, the node has {len(entry['output'])}")
    return problems


def to_api_prompt(workflow: dict, info: dict) -> dict:
    """The API-format prompt the frontend would queue for a UI-format workflow (plain graphs only)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0:
            continue
        inputs = {}
        specs = widget_specs(info[node["type"]])
        for (name, kind, _), value in zip(specs, node.get("widgets_values", [])):
            if kind != CONTROL:
                inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@lru_cache(maxsize=1)
def _object_info(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/object_info", timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture
def object_info(comfy_server) -> dict:
    return _object_info(comfy_server.url)


# ---------------------------------------------------------------- files only


def test_the_folder_holds_each_promised_workflow_with_a_thumbnail():
    names = {path.stem for path in WORKFLOWS}
    assert set(MODEL_WORKFLOWS) | {DEMO, "otcache-apply-preset-flux1-dev"} <= names
    for path in WORKFLOWS:
        assert (FOLDER / f"{path.stem}.jpg").is_file(), f"{path.stem}.jpg (template browser thumbnail) is missing"
        workflow = load(path)
        assert workflow.get("version") == 0.4 and isinstance(workflow["nodes"], list) and isinstance(workflow["links"], list)
        assert workflow["last_node_id"] >= max(node["id"] for node in workflow["nodes"])
        assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])


def _upstream(workflow: dict, node_id: int, input_name: str) -> dict:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    slot = next(s for s in nodes[node_id].get("inputs", []) if s["name"] == input_name)
    return nodes[links[slot["link"]][1]]


@pytest.mark.parametrize("name", sorted(MODEL_WORKFLOWS))
def test_model_workflows_have_the_full_chain(name):
    """Preset (reference) + Preset/Text (anchor) -> Budget Slider -> Cached Model -> KSampler, 50 steps."""
    family, latent = MODEL_WORKFLOWS[name]
    workflow = by_name(name)
    types = [node["type"] for node in workflow["nodes"]]
    assert latent in types and "VAEDecode" in types and "UNETLoader" in types
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    cached = _upstream(workflow, sampler["id"], "model")
    assert cached["type"] == "OTCacheCachedModel"
    slider = _upstream(workflow, cached["id"], "schedule")
    assert slider["type"] == "OTCacheBudgetSlider"
    reference = _upstream(workflow, slider["id"], "reference")
    anchor = _upstream(workflow, slider["id"], "anchor")
    assert reference["type"] == "OTCacheSchedulePreset" and anchor["type"] in ("OTCacheSchedulePreset", "OTCacheScheduleFromText")
    assert reference["widgets_values"][0].startswith(f"lemica-{family}-50-")
    # The sampler runs the schedules' step count, so nothing is resampled.
    assert sampler["widgets_values"][2] == 50


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
    assert re.search(r"OTCache \[block\] K=5/N=10: computed 5/10 evaluations", new), new[-3000:]
