"""Shipped presets: the published LeMiCa schedules and synthetic uniform/full names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_otcache.otcache_core.presets import (
    SCHEDULES_DIR,
    list_presets,
    load_preset,
    model_families,
)
from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError

REPO_SCHEDULES = Path(__file__).resolve().parents[2] / "schedules"

# Count of published schedules per family in data/published_schedules.json.
PUBLISHED_COUNTS = {
    "flux1-dev": 4, "flux2-dev": 3, "qwen-image": 3, "hunyuanvideo-1.5": 4,
    "wan2.1-t2v-1.3b": 4, "wan2.1-t2v-14b": 4, "wan2.1-i2v-14b": 4, "z-image": 3,
}


def test_schedules_dir_is_the_repository_folder():
    assert SCHEDULES_DIR == REPO_SCHEDULES and SCHEDULES_DIR.is_dir()


def test_model_families():
    assert model_families() == sorted(PUBLISHED_COUNTS)


def test_every_published_schedule_ships_with_attribution():
    presets = list_presets()
    assert len(presets) == sum(PUBLISHED_COUNTS.values()) == 29
    assert len({p.name for p in presets}) == 29
    for p in presets:
        s = p.schedule
        assert p.name == f"lemica-{p.model}-{p.steps}-{p.budget}"
        assert (s.model, s.steps, s.budget, s.source) == (p.model, p.steps, p.budget, "published")
        assert "arXiv 2511.00090" in s.params["attribution"] and "UnicomAI/LeMiCa" in s.params["attribution"]
        assert "arXiv 2511.00090" in p.attribution and p.file == f"lemica-{p.model}.json"


def test_list_is_sorted_by_family_steps_then_budget_descending():
    presets = list_presets()
    keys = [(p.model, p.steps, -p.budget) for p in presets]
    assert keys == sorted(keys)
    assert [p.budget for p in list_presets("flux1-dev")] == [26, 20, 15, 10]
    assert [p.budget for p in list_presets("z-image")] == [8, 7, 6]


def test_list_by_family():
    for family, count in PUBLISHED_COUNTS.items():
        presets = list_presets(family)
        assert len(presets) == count and {p.model for p in presets} == {family}
    assert {p.steps for p in list_presets("wan2.1-i2v-14b")} == {40}


def test_load_preset_gives_the_published_lists():
    assert load_preset("lemica-flux1-dev-50-26").compute == (
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30, 35, 39, 42, 44, 45, 46, 47, 48, 49)
    assert load_preset("lemica-flux1-dev-50-10") == Schedule.parse("50:0,1,3,7,14,21,28,35,42,49")
    assert str(load_preset(" lemica-z-image-10-6 ")) == "10:0,1,2,5,8,9"
    assert load_preset("lemica-wan2.1-i2v-14b-40-14") == Schedule.parse("40:0,1,2,3,4,6,8,11,15,22,29,34,37,39")


def test_synthetic_presets():
    assert load_preset("uniform-50-10") == Schedule.uniform(50, 10)
    assert load_preset("uniform-50-10").source == "uniform"
    assert load_preset("full-28").is_full and load_preset("full-28").steps == 28
    with pytest.raises(ScheduleError, match=r"budget 60 is out of range for 50 steps"):
        load_preset("uniform-50-60")


@pytest.mark.parametrize(
    "name, message",
    [
        ("lemica-flux1-dev-50-25", r"unknown preset 'lemica-flux1-dev-50-25'; did you mean lemica-flux1-dev-50-26"),
        ("lemica-flux-dev-50-20", r"did you mean lemica-flux2-dev-50-20, lemica-flux1-dev-50-20, "),
        ("zzz", r"unknown preset 'zzz'; known presets: lemica-flux1-dev-50-10, .*\(also uniform-<steps>-<budget> and full-<steps>\)"),
        ("uniform-50", r"unknown preset 'uniform-50'"),
    ],
)
def test_unknown_preset_names_close_matches(name, message):
    with pytest.raises(ScheduleError, match=message):
        load_preset(name)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ScheduleError, match=r"no presets for model family 'flux'; known families: flux1-dev, flux2-dev, hunyuanvideo-1.5"):
        list_presets("flux")
    with pytest.raises(ScheduleError, match=r"a preset name must be a string; got int"):
        load_preset(5)  # type: ignore[arg-type]


def test_shipped_files_are_otcache_presets():
    for path in sorted(REPO_SCHEDULES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["format"] == "otcache.presets" and data["version"] == 1
        assert data["model"] and path.name == f"lemica-{data['model']}.json"


# ----------------------------------------------------------------- user folders


def _collection(model: str, entries: list[dict]) -> dict:
    return {"format": "otcache.presets", "version": 1, "model": model, "attribution": "test", "presets": entries}


def test_a_saved_schedule_file_is_a_preset_named_by_its_file(tmp_path):
    s = Schedule(20, [0, 3, 9, 19], model="my-dit", source="reference")
    (tmp_path / "my-reference.json").write_text(s.to_json())
    assert load_preset("my-reference", directory=tmp_path).to_dict() == s.to_dict()
    [preset] = list_presets("my-dit", directory=tmp_path)
    assert (preset.name, preset.steps, preset.budget, preset.speedup) == ("my-reference", 20, 4, 5.0)
    assert model_families(directory=tmp_path) == ["my-dit"]


def test_an_empty_or_missing_folder_has_no_presets(tmp_path):
    assert list_presets(directory=tmp_path) == []
    assert list_presets(directory=tmp_path / "missing") == []
    with pytest.raises(ScheduleError, match=r"unknown preset 'x'; known presets: \(none\)"):
        load_preset("x", directory=tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{oops", r"preset file bad.json cannot be read"),
        ("[]", r"preset file bad.json must hold a JSON object"),
        (json.dumps({"format": "other"}), r"preset file bad.json: format is 'other', expected 'otcache.presets' or 'otcache.schedule'"),
        (json.dumps({"format": "otcache.presets", "version": 2, "presets": []}), (r"preset file bad.json: presets version "
                                                                                   r"2 is not supported")),
        (json.dumps({"format": "otcache.presets", "version": 1, "presets": {}}), r"preset file bad.json: 'presets' must be a list"),
        (json.dumps(_collection("m", [{"steps": 5}])), r"preset file bad.json: every preset entry needs a string 'name'"),
        (json.dumps(_collection("m", [{"name": "a", "steps": 5, "budget": 3, "schedule": Schedule(5, [0, 4]).to_dict()}])),
         r"preset file bad.json: preset a: 'budget' is 3 but its schedule has 2"),
        (json.dumps(_collection("m", [{"name": "a", "steps": 5, "budget": 2, "schedule": {
            "format": "otcache.schedule", "version": 1, "steps": 5, "compute": [0, 5]}}])),
         r"preset file bad.json: step 5 is out of range for 5 steps"),
    ],
)
def test_malformed_preset_files_name_the_file(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ScheduleError, match=message):
        list_presets(directory=tmp_path)


def test_duplicate_names_across_files_are_refused(tmp_path):
    entry = {"name": "dup", "steps": 5, "budget": 2, "schedule": Schedule(5, [0, 4]).to_dict()}
    (tmp_path / "a.json").write_text(json.dumps(_collection("m", [entry])))
    (tmp_path / "b.json").write_text(json.dumps(_collection("m", [entry])))
    with pytest.raises(ScheduleError, match=r"preset name dup appears in both a.json and b.json; rename one"):
        load_preset("dup", directory=tmp_path)
