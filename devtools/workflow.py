"""A UI-format (litegraph) workflow, as the frontend saves it, to the API prompt the frontend would queue.

The frontend makes one widget per widget-typed input, in the schema's ``input_order``, and
a ``control_after_generate`` widget after seeds; ``widgets_values`` lists their values in
that order. Virtual nodes (notes, reroutes, primitives) are not sent.
"""
from __future__ import annotations

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # virtual nodes, not in /object_info
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
CONTROL = "control_after_generate"
# The frontend adds a control_after_generate widget to an INT input named like this unless
# its spec says otherwise (ComfyUI frontend: `control_after_generate ?? ["seed", "noise_seed"].includes(name)`).
SEED_NAMES = ("seed", "noise_seed")
CONTROL_OPTIONS = ["fixed", "increment", "decrement", "randomize"]


def widget_specs(entry: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of each widget the frontend makes for a node (its ``/object_info`` entry),
    in ``widgets_values`` order; a seed's control widget is ``<name>.control_after_generate``."""
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
            if options.get(CONTROL, kind == "INT" and name in SEED_NAMES):
                specs.append((f"{name}.{CONTROL}", CONTROL, {"options": CONTROL_OPTIONS}))
    return specs


def widget_names(entry: dict) -> list[str]:
    return [name for name, _, _ in widget_specs(entry)]


def to_api_prompt(workflow: dict, info: dict, only: set[int] | None = None) -> dict:
    """The API-format prompt for ``workflow`` (plain graphs: no subgraphs), given the server's ``/object_info``;
    ``only``: just these node ids. Muted and bypassed nodes are left out."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != 0 or (only is not None and node["id"] not in only):
            continue
        inputs = {}
        for (name, kind, _), value in zip(widget_specs(info[node["type"]]), node.get("widgets_values", [])):
            if kind != CONTROL:
                inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
