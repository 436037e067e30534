"""The pack loads the way ComfyUI 0.30 loads it: V3 entry point, fixed node ids, no V1 mappings."""
from __future__ import annotations

from devtools.host import REPO_ROOT

import asyncio

import tomllib

import comfyui_otcache

EXPECTED_NODES = {"OTCacheCachedModel", "OTCacheDemoModel", "OTCacheBudgetSlider", "OTCacheSchedulePreset",
                  "OTCacheScheduleFromText", "OTCacheScheduleLoad", "OTCacheScheduleSave", "OTCacheReference",
                  "OTCacheAnchorSearch", "OTCacheTinyFlux"}


def registered_nodes():
    extension = asyncio.run(comfyui_otcache.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def test_entry_point_registers_the_nodes_with_v3_schemas():
    assert not hasattr(comfyui_otcache, "NODE_CLASS_MAPPINGS")  # ComfyUI would ignore comfy_entrypoint
    assert comfyui_otcache.WEB_DIRECTORY == "./web"
    nodes = {cls.define_schema().node_id: cls for cls in registered_nodes()}
    assert EXPECTED_NODES <= set(nodes)
    for node_id, cls in nodes.items():
        schema = cls.define_schema()
        assert schema.category.startswith("OTCache") and schema.description
        missing = [i.id for i in schema.inputs if not getattr(i, "tooltip", None)]
        assert not missing, f"{node_id}: inputs without a tooltip: {missing}"


def test_pyproject_follows_comfy_registry_conventions():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "dependencies"):
        assert project.get(key), key
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy)
    assert meta["project"]["urls"]
    requirements = [line.split(">=")[0] for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    assert sorted(requirements) == sorted(d.split(">=")[0] for d in project["dependencies"])
    assert "torch" not in requirements  # the host provides torch
