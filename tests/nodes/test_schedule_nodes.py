"""The schedule nodes, called as ComfyUI calls V3 nodes: define_schema() and execute()."""
from __future__ import annotations

import json
import os
import sys
import types

import folder_paths
import pytest
from comfy_api.latest import io

from comfyui_otcache.nodes import schedule_nodes as sn
from comfyui_otcache.nodes.schedule_nodes import (
    OTCacheBudgetSlider,
    OTCacheScheduleFromText,
    OTCacheScheduleLoad,
    OTCacheSchedulePreset,
    OTCacheScheduleSave,
)
from comfyui_otcache.otcache_comfy import schedule_files as sf
from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError

REFERENCE = Schedule.parse("50:0,1,2,3,4,5,6,7,8,9,10,12,15,18,20,25,30,35,39,42,44,45,46,47,48,49")
ANCHOR = Schedule.parse("50:0,1,3,7,14,21,28,35,42,49")
ALL_NODES = [OTCacheBudgetSlider, OTCacheSchedulePreset, OTCacheScheduleFromText, OTCacheScheduleLoad, OTCacheScheduleSave]


@pytest.fixture
def schedules_dir(tmp_path, monkeypatch):
    """A temporary otcache_schedules folder in place of models/otcache_schedules."""
    folder = tmp_path / "otcache_schedules"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, sf.SCHEDULES_FOLDER, ([str(folder)], {".json"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return folder


def slider(speedup, **kwargs):
    return OTCacheBudgetSlider.execute(reference=REFERENCE, anchor=ANCHOR, speedup=speedup, **kwargs)


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("node", ALL_NODES, ids=lambda n: n.__name__)
def test_schema_has_category_description_and_tooltips(node):
    schema = node.define_schema()
    assert schema.node_id == node.__name__
    assert schema.category == "OTCache"
    assert schema.display_name.startswith("OTCache ")
    assert len(schema.description) > 60
    for item in [*schema.inputs, *schema.outputs]:
        assert item.tooltip, f"{node.__name__}: {item.id} has no tooltip"
    assert [o.io_type for o in schema.outputs] == ["OTCACHE_SCHEDULE"]
    # The classic-node view ComfyUI builds from the schema must work too.
    assert node.INPUT_TYPES()["required"]


def test_schema_details():
    inputs = {i.id: i for i in OTCacheBudgetSlider.define_schema().inputs}
    speed = inputs["speedup"]
    assert (speed.min, speed.max, speed.display_mode) == (1.0, sn.MAX_SPEEDUP_WIDGET, io.NumberDisplay.slider)
    assert inputs["steps"].optional and inputs["steps"].default == 0
    assert inputs["mapping"].advanced and inputs["mapping"].options == ["linear", "log"]
    assert OTCacheScheduleSave.define_schema().is_output_node is True
    assert not OTCacheBudgetSlider.define_schema().is_output_node


# ---------------------------------------------------------------- Budget Slider


def test_budget_slider_published_flux_pair_at_2_5x():
    out = slider(2.5)
    schedule = out.args[0]
    assert list(schedule.compute) == [0, 1, 2, 3, 4, 6, 7, 9, 12, 15, 19, 22, 28, 33, 37, 41, 43, 45, 47, 49]
    assert (schedule.steps, schedule.budget, schedule.source) == (50, 20, "interpolated")
    assert schedule.params["lambda"] == pytest.approx(0.375)
    assert schedule.params["requested_speedup"] == 2.5
    text = out.ui["text"][0]
    assert str(schedule) in text
    assert "K = 20 of N = 50" in text and "2.50x" in text and "lambda = 0.375" in text
    assert "reference -> anchor" in text
    assert out.ui["otcache_schedule"] == [schedule.to_dict()]
    json.dumps(out.ui)  # the executed message must be JSON


def test_budget_slider_endpoints_are_exact():
    full = slider(1.0).args[0]
    assert full.is_full and full.steps == 50
    assert slider(50 / 26).args[0] == REFERENCE
    anchor = slider(5.0).args[0]
    assert anchor == ANCHOR
    assert "lambda = 1.000" in slider(5.0).ui["text"][0]


def test_budget_slider_log_mapping_stays_nearer_the_reference():
    linear = slider(2.5, mapping="linear").args[0]
    log = slider(2.5, mapping="log").args[0]
    assert linear.budget == log.budget == 20
    assert log.params["mapping"] == "log"
    assert log.params["lambda"] < linear.params["lambda"]
    assert log != linear


@pytest.mark.parametrize("speedup", [5.01, 6.0, 20.0, 0.5])
def test_budget_slider_out_of_range_names_the_range(speedup):
    with pytest.raises(ScheduleError) as caught:
        slider(speedup)
    message = str(caught.value)
    assert "out of range" in message
    assert "1.00 .. 5.00" in message
    assert "5.000x" in message and "budget 10 of 50" in message


def test_budget_slider_steps_resamples_to_the_sampler():
    out = slider(2.5, steps=28)
    schedule = out.args[0]
    assert schedule.steps == 28
    assert schedule.budget == 11  # round(28 / 2.5)
    assert str(schedule) == "28:0,1,2,4,6,9,14,19,22,25,27"
    assert "resampled from 50 to 28" in out.ui["text"][0]
    # steps=0 and steps=N both keep the reference's step count.
    assert slider(2.5, steps=0).args[0] == slider(2.5, steps=50).args[0] == slider(2.5).args[0]


def test_budget_slider_range_follows_resampled_anchor():
    # At 28 steps the anchor is resampled to budget 6: the maximum becomes 28/6 = 4.67x.
    assert slider(28 / 6, steps=28).args[0].budget == 6
    with pytest.raises(ScheduleError, match=r"1\.00 \.\. 4\.66 .*budget 6 of 28 steps, at 28 steps"):
        slider(5.0, steps=28)


def test_budget_slider_rejects_swapped_pair():
    with pytest.raises(ScheduleError, match="swap them"):
        OTCacheBudgetSlider.execute(reference=ANCHOR, anchor=REFERENCE, speedup=2.0)


# ---------------------------------------------------------------- presets and text


def test_preset_combo_lists_shipped_and_uniform_presets():
    schema = OTCacheSchedulePreset.define_schema()
    options = schema.inputs[0].options
    assert "lemica-flux1-dev-50-26" in options and "lemica-qwen-image-50-10" in options
    assert "uniform-50-10" in options
    assert len(options) == len(set(options))


def test_preset_outputs_the_published_schedule():
    out = OTCacheSchedulePreset.execute(preset="lemica-flux1-dev-50-26")
    schedule = out.args[0]
    assert schedule == REFERENCE and schedule.model == "flux1-dev" and schedule.source == "published"
    text = out.ui["text"][0]
    assert "flux1-dev, 50 steps, budget 26" in text and "LeMiCa" in text
    assert out.ui["otcache_schedule"][0]["compute"] == list(REFERENCE.compute)


def test_uniform_preset():
    schedule = OTCacheSchedulePreset.execute(preset="uniform-50-10").args[0]
    assert schedule == Schedule.uniform(50, 10)
    assert "any model" in OTCacheSchedulePreset.execute(preset="uniform-50-10").ui["text"][0]


def test_text_node_parses_compact_form_ranges_and_json():
    out = OTCacheScheduleFromText.execute(text=" 50:0-10,12,15,18,20,25,30,35,39,42,44-49 ")
    assert out.args[0] == REFERENCE
    assert "K = 26 of N = 50" in out.ui["text"][0]
    restored = OTCacheScheduleFromText.execute(text=ANCHOR.with_metadata(model="flux1-dev").to_json()).args[0]
    assert restored == ANCHOR and restored.model == "flux1-dev"
    default = OTCacheScheduleFromText.define_schema().inputs[0].default
    assert OTCacheScheduleFromText.execute(text=default).args[0] == REFERENCE


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("0,1,2,49", "no ':'"),
        ("50:0,2,1,49", "sorted"),
        ("50:1,2,49", "step 0"),
        ("50:0,1,60", "out of range"),
        ("50:0,x,49", "'x'"),
        ('{"format": "other"}', "not an OTCache schedule"),
    ],
)
def test_text_node_errors_explain_the_form(text, problem):
    with pytest.raises(ScheduleError) as caught:
        OTCacheScheduleFromText.execute(text=text)
    message = str(caught.value)
    assert problem in message
    assert '"N:s0,s1,..."' in message


# ---------------------------------------------------------------- save and load


def test_save_then_load_round_trip(schedules_dir):
    made = slider(2.5).args[0].with_metadata(model="flux1-dev")
    out = OTCacheScheduleSave.execute(schedule=made, filename="flux 2.5x", overwrite=False)
    path = schedules_dir / "flux 2.5x.json"
    assert out.args[0] is made
    assert str(path) in out.ui["text"][0]
    assert json.loads(path.read_text())["compute"] == list(made.compute)
    assert [p.name for p in schedules_dir.iterdir()] == ["flux 2.5x.json"]  # no temporary file left

    assert "flux 2.5x.json" in OTCacheScheduleLoad.define_schema().inputs[0].options
    loaded = OTCacheScheduleLoad.execute(schedule_file="flux 2.5x.json").args[0]
    assert loaded.to_dict() == made.to_dict()


def test_save_refuses_to_overwrite_unless_asked(schedules_dir):
    OTCacheScheduleSave.execute(schedule=REFERENCE, filename="mine.json")
    with pytest.raises(ScheduleError, match=r"mine\.json already exists.*overwrite"):
        OTCacheScheduleSave.execute(schedule=ANCHOR, filename="mine", overwrite=False)
    assert Schedule.from_json((schedules_dir / "mine.json").read_text()) == REFERENCE
    OTCacheScheduleSave.execute(schedule=ANCHOR, filename="mine", overwrite=True)
    assert Schedule.from_json((schedules_dir / "mine.json").read_text()) == ANCHOR


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../x", "outside"),
        ("..", "outside"),
        ("sub/x", "outside"),
        ("..\\x", "outside"),
        ("/etc/passwd", "outside"),
        ("a..b", "outside"),
        ("x:y", "':'"),
        ("", "empty"),
        (".json", "empty"),
        (".hidden", "starts with '.'"),
        ("CON", "reserved"),
    ],
)
def test_save_rejects_bad_names(schedules_dir, name, problem):
    with pytest.raises(ScheduleError) as caught:
        OTCacheScheduleSave.execute(schedule=REFERENCE, filename=name)
    assert problem in str(caught.value)
    assert list(schedules_dir.iterdir()) == []
    assert not (schedules_dir.parent / "x.json").exists()


def test_save_refuses_a_symlink_leading_out(schedules_dir, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep")
    os.symlink(outside, schedules_dir / "link.json")
    with pytest.raises(ScheduleError, match="outside"):
        OTCacheScheduleSave.execute(schedule=REFERENCE, filename="link", overwrite=True)
    assert outside.read_text() == "keep"


def test_save_creates_a_missing_folder_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "otcache_schedules"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, sf.SCHEDULES_FOLDER, ([str(folder)], {".json"}))
    OTCacheScheduleSave.execute(schedule=REFERENCE, filename="a")
    assert (folder / "a.json").is_file()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(sf.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        OTCacheScheduleSave.execute(schedule=ANCHOR, filename="a", overwrite=True)
    assert Schedule.from_json((folder / "a.json").read_text()) == REFERENCE
    assert sorted(p.name for p in folder.iterdir()) == ["a.json"]


def test_load_errors_name_the_file(schedules_dir):
    (schedules_dir / "broken.json").write_text('{"format": "otcache.schedule", "version": 1, "steps": 50}')
    with pytest.raises(ScheduleError, match=r"broken\.json.*lacks compute"):
        OTCacheScheduleLoad.execute(schedule_file="broken.json")
    (schedules_dir / "notjson.json").write_text("50:0,49")
    with pytest.raises(ScheduleError, match=r"notjson\.json.*not valid JSON"):
        OTCacheScheduleLoad.execute(schedule_file="notjson.json")
    with pytest.raises(ScheduleError, match=r"'gone\.json' was not found"):
        OTCacheScheduleLoad.execute(schedule_file="gone.json")


def test_load_fingerprint_follows_file_contents(schedules_dir):
    path = schedules_dir / "s.json"
    path.write_text(REFERENCE.to_json())
    first = OTCacheScheduleLoad.fingerprint_inputs(schedule_file="s.json")
    assert first == OTCacheScheduleLoad.fingerprint_inputs(schedule_file="s.json")
    path.write_text(ANCHOR.to_json())
    assert OTCacheScheduleLoad.fingerprint_inputs(schedule_file="s.json") != first
    assert OTCacheScheduleLoad.fingerprint_inputs(schedule_file="gone.json") == "missing:gone.json"


def test_folder_registration_keeps_user_paths(monkeypatch, tmp_path):
    user = str(tmp_path / "mine")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, sf.SCHEDULES_FOLDER, ([user], set()))
    sf.register_schedule_folder()
    paths, extensions = folder_paths.folder_names_and_paths[sf.SCHEDULES_FOLDER]
    default = os.path.join(folder_paths.models_dir, "otcache_schedules")
    assert paths == [user, default]
    assert extensions == {".json"}
    sf.register_schedule_folder()  # idempotent
    assert folder_paths.folder_names_and_paths[sf.SCHEDULES_FOLDER][0] == [user, default]

    monkeypatch.delitem(folder_paths.folder_names_and_paths, sf.SCHEDULES_FOLDER)
    sf.register_schedule_folder()
    assert folder_paths.folder_names_and_paths[sf.SCHEDULES_FOLDER] == ([default], {".json"})


def test_progress_text_is_sent_when_a_server_runs(monkeypatch):
    sent = []

    class FakeServer:
        def send_progress_text(self, text, node_id):
            sent.append((text, node_id))

    class Hidden:
        unique_id = "7"

    # Without a server (no server module, or no instance) nothing is sent and nothing fails.
    monkeypatch.setattr(OTCacheScheduleFromText, "hidden", Hidden)
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=None)))
    OTCacheScheduleFromText.execute(text="10:0,9")
    assert sent == []
    # ComfyUI's server module is replaced by a stand-in: importing the real one takes seconds.
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=FakeServer())))
    OTCacheScheduleFromText.execute(text="10:0,9")
    assert sent == [("10:0,9\nK = 2 of N = 10 steps computed, predicted speedup 5.00x", "7")]
    monkeypatch.setattr(OTCacheScheduleFromText, "hidden", None)
    OTCacheScheduleFromText.execute(text="10:0,9")
    assert len(sent) == 1
