"""Schedule: validation, derived facts, equality, uniform/full, compact text and JSON."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import schedules

from comfyui_otcache.otcache_core.schedule import (
    FORMAT,
    FORMAT_VERSION,
    SOURCES,
    FrozenMapping,
    Schedule,
    ScheduleError,
    repair_steps,
)

FLUX_REF = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30, 35, 39, 42, 44, 45, 46, 47, 48, 49)




json_scalars = (
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


# ----------------------------------------------------------------- construction


def test_construction_normalizes_input_types():
    s = Schedule(np.int64(6), np.array([0, 2, 5]), model="m")
    assert s.steps == 6 and type(s.steps) is int
    assert s.compute == (0, 2, 5) and all(type(x) is int for x in s.compute)
    assert Schedule(6.0, [0.0, 2, 5.0]).compute == (0, 2, 5)


def test_derived_facts():
    s = Schedule(10, [0, 1, 4, 9])
    assert s.budget == len(s) == 4
    assert s.speedup == 2.5
    assert s.skipped == (2, 3, 5, 6, 7, 8)
    assert s.mask == (True, True, False, False, True, False, False, False, False, True)
    assert not s.is_full
    assert Schedule(3, [0, 1, 2]).is_full


def test_equality_and_hash_ignore_metadata():
    plain = Schedule(50, FLUX_REF)
    labelled = Schedule(50, FLUX_REF, model="flux1-dev", source="published", params={"a": 1}, metrics={"lpips": 0.1})
    assert plain == labelled and hash(plain) == hash(labelled)
    assert len({plain, labelled}) == 1
    assert Schedule(50, [0, 1, 49]) != Schedule(50, [0, 2, 49])
    assert Schedule(50, [0, 49]) != Schedule(51, [0, 50])
    assert Schedule(3, [0, 2]) != (3, (0, 2))


def test_schedule_is_immutable_all_the_way_down():
    params = {"nested": {"xs": [1, 2]}}
    s = Schedule(5, [0, 4], params=params)
    params["nested"]["xs"].append(3)  # the caller's dict stays theirs
    assert s.params == {"nested": {"xs": (1, 2)}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.params["new"] = 1  # type: ignore[index]
    assert isinstance(s.params["nested"], FrozenMapping)
    assert isinstance(s.params["nested"]["xs"], tuple)
    hash(s.params)  # frozen metadata is hashable


def test_pickle_and_deepcopy_keep_everything():
    s = Schedule(10, [0, 3, 9], model="m", source="anchor", params={"k": [1, {"x": 2.5}]}, metrics={"lpips": 0.2})
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert clone.to_dict() == s.to_dict()


def test_with_metadata_copies_and_validates():
    s = Schedule(10, [0, 3, 9])
    t = s.with_metadata(model="flux1-dev", source="reference", metrics={"psnr": 30.0})
    assert (t.model, t.source, dict(t.metrics)) == ("flux1-dev", "reference", {"psnr": 30.0})
    assert (s.model, s.source, dict(s.metrics)) == ("", "custom", {})
    assert t == s
    with pytest.raises(ScheduleError, match="source must be one of .*got 'magic'"):
        s.with_metadata(source="magic")
    with pytest.raises(ScheduleError, match="with_metadata cannot change compute"):
        s.with_metadata(compute=(0, 9))


# ----------------------------------------------------------------- uniform and full


def test_uniform_examples():
    # k * 49 / 9 = 0, 5.44, 10.89, 16.33, 21.78, 27.22, 32.67, 38.11, 43.56, 49
    assert Schedule.uniform(50, 10).compute == (0, 5, 11, 16, 22, 27, 33, 38, 44, 49)
    assert Schedule.uniform(4, 3).compute == (0, 2, 3)  # 1.5 is a tie: rounds up
    assert Schedule.uniform(7, 2).compute == (0, 6)
    assert Schedule.uniform(50, 10).source == "uniform"


@given(st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_uniform_is_evenly_spread_with_exact_budget(nk):
    n, k = nk
    s = Schedule.uniform(n, k)
    assert s.budget == k and s.compute[0] == 0 and s.compute[-1] == n - 1
    gaps = np.diff(s.compute)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1


def test_full():
    s = Schedule.full(5, model="x")
    assert s.compute == (0, 1, 2, 3, 4) and s.is_full and s.source == "full" and s.model == "x"


def test_repair_steps_forward_and_backward():
    assert repair_steps([0, 0, 1, 4, 9], 10) == (0, 1, 2, 4, 9)  # forward pass lifts collisions
    assert repair_steps([0, 5, 8, 9, 9], 10) == (0, 5, 7, 8, 9)  # backward pass pulls back from the end
    assert repair_steps([3, 3, 3], 3) == (0, 1, 2)
    with pytest.raises(ScheduleError, match=r"cannot place 4 computed steps in 3 steps; the budget must be in \[2, 3\]"):
        repair_steps([0, 1, 2, 2], 3)


# ----------------------------------------------------------------- every error


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Schedule(1, [0]), r"steps must be at least 2 .*got 1"),
        (lambda: Schedule(True, [0, 1]), r"steps must be an integer; got the boolean True"),
        (lambda: Schedule(10.5, [0, 9]), r"steps must be an integer; got 10.5"),
        (lambda: Schedule(float("nan"), [0, 9]), r"steps must be an integer; got nan"),
        (lambda: Schedule("10", [0, 9]), r"steps must be an integer; got str '10'"),
        (lambda: Schedule(10, "0,9"), r"compute must be a list of step indices; got str \(use Schedule.parse"),
        (lambda: Schedule(10, None), r"compute must be a list of step indices; got NoneType"),
        (lambda: Schedule(10, [0, 2.5, 9]), r"compute step 2.5 must be an integer; got 2.5"),
        (lambda: Schedule(10, [0, False, 9]), r"must be an integer; got the boolean False"),
        (lambda: Schedule(50, [0, 10, 50]), r"step 50 is out of range for 50 steps \(valid 0..49\)"),
        (lambda: Schedule(50, [-1, 0, 49]), r"step -1 is out of range for 50 steps \(valid 0..49\)"),
        (lambda: Schedule(50, [0, 7, 7, 49]), r"step 7 is listed twice; list each computed step once"),
        (lambda: Schedule(50, [0, 7, 5, 49]), r"compute steps must be sorted ascending; got 5 after 7 \(sort the list\)"),
        (lambda: Schedule(50, [1, 5, 49]), r"a schedule must compute step 0 \(the first step\); add 0 to the list"),
        (lambda: Schedule(50, [0, 5, 48]), r"a schedule must compute step 49 \(the last of 50 steps\); add 49"),
        (lambda: Schedule(50, []), r"a schedule must compute step 0"),
        (lambda: Schedule(3, [0, 1, 2, 2]), r"4 computed steps listed for only 3 steps"),
        (lambda: Schedule(10, [0, 9], model=3), r"model must be a string; got int 3"),
        (lambda: Schedule(10, [0, 9], source="graph"), r"source must be one of reference, anchor, .*custom; got 'graph'"),
        (lambda: Schedule(10, [0, 9], params=[1]), r"params must be a dict; got list"),
        (lambda: Schedule(10, [0, 9], metrics={"lpips": float("nan")}), r"metrics\['lpips'\] is nan, which JSON cannot hold"),
        (lambda: Schedule(10, [0, 9], params={"x": [1, float("inf")]}), r"params\['x'\]\[1\] is inf"),
        (lambda: Schedule(10, [0, 9], params={"x": object()}), r"params\['x'\] is a object, which is not JSON-serializable"),
        (lambda: Schedule(10, [0, 9], params={1: "a"}), r"params has key 1 of type int; JSON keys must be strings"),
        (lambda: Schedule.uniform(10, 11), r"budget 11 is out of range for 10 steps \(valid 2..10\)"),
        (lambda: Schedule.uniform(10, 1), r"budget 1 is out of range for 10 steps"),
        (lambda: Schedule.full(1), r"steps must be at least 2"),
    ],
)
def test_invalid_input_raises_schedule_error(make, message):
    with pytest.raises(ScheduleError, match=message):
        make()


def test_schedule_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)


# ----------------------------------------------------------------- compact text


def test_compact_text_form():
    assert str(Schedule(50, [0, 1, 2, 3, 5, 8, 49])) == "50:0,1,2,3,5,8,49"
    assert repr(Schedule(4, [0, 3], model="m", source="anchor")) == "Schedule.parse('4:0,3', model='m', source='anchor')"


def test_parse_tolerates_whitespace_and_ranges():
    assert Schedule.parse("  50 : 0, 1 ,2,\t49 \n").compute == (0, 1, 2, 49)
    assert Schedule.parse("20:0-3, 7 - 9,19").compute == (0, 1, 2, 3, 7, 8, 9, 19)
    assert Schedule.parse("3:0-2").is_full
    assert Schedule.parse("10:0,9", model="m", source="anchor").model == "m"


def test_parse_accepts_the_json_form_too():
    s = Schedule(10, [0, 4, 9], model="m", params={"a": 1})
    parsed = Schedule.parse("\n" + s.to_json(indent=2))
    assert parsed.to_dict() == s.to_dict()
    assert Schedule.parse(s.to_json(), source="reference").source == "reference"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"schedule text is empty; expected \"N:s0,s1,...\""),
        ("0,1,2", r"has no ':' after the step count; expected"),
        ("fifty:0,49", r"step count 'fifty' is not a whole number; expected"),
        ("-5:0,1", r"step count '-5' is not a whole number"),
        ("50:0,,49", r"entry 2 of the step list is empty \(two commas in a row\?\)"),
        ("50:0,1,", r"entry 3 of the step list is empty"),
        ("50:0,x,49", r"entry 2 of the step list, 'x', is not a step number or a range a-b"),
        ("50:0,-1,49", r"entry 2 of the step list, '-1', is not a step number"),
        ("50:0,2.5,49", r"'2.5', is not a step number"),
        ("50:0,9-3,49", r"range '9-3' runs backwards; write it as 3-9"),
        ("50:0,7,5,49", r"compute steps must be sorted ascending; got 5 after 7"),
        ("50:0,49,50", r"step 50 is out of range for 50 steps \(valid 0..49\)"),
        ("50:0,0-3,49", r"step 0 is listed twice"),
        ("50:1,49", r"must compute step 0"),
        ("3:0,1,2,3", r"4 computed steps listed for only 3 steps|step 3 is out of range"),
        ("1:0", r"steps must be at least 2"),
    ],
)
def test_parse_rejects_malformed_text(text, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.parse(text)


def test_parse_rejects_non_text():
    with pytest.raises(ScheduleError, match=r"schedule text must be a string; got list"):
        Schedule.parse([0, 1])  # type: ignore[arg-type]


@settings(max_examples=100)
@given(schedules())
def test_compact_round_trip(s):
    assert Schedule.parse(str(s)) == s
    assert Schedule.parse(str(s)).compute == s.compute


# ----------------------------------------------------------------- JSON


def test_json_layout():
    s = Schedule(10, [0, 4, 9], model="flux1-dev", sampler="euler", scheduler="simple", source="reference",
                 params={"objective": "minimax"}, metrics={"lpips": 0.125})
    assert json.loads(s.to_json()) == {
        "format": "otcache.schedule", "version": 1, "steps": 10, "compute": [0, 4, 9],
        "model": "flux1-dev", "sampler": "euler", "scheduler": "simple", "source": "reference",
        "params": {"objective": "minimax"}, "metrics": {"lpips": 0.125},
    }
    assert (FORMAT, FORMAT_VERSION) == ("otcache.schedule", 1)


@settings(max_examples=50)
@given(
    schedules(max_steps=60),
    st.sampled_from(SOURCES),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_json_round_trip_keeps_every_field(s, source, model, params, metrics):
    s = s.with_metadata(source=source, model=model, params=params, metrics=metrics)
    back = Schedule.from_json(s.to_json())
    assert back.to_dict() == s.to_dict()
    assert Schedule.from_json(s.to_dict()).to_dict() == s.to_dict()
    assert json.loads(s.to_json())["params"] == json.loads(json.dumps(params))


def test_from_json_fills_defaults():
    s = Schedule.from_json('{"format": "otcache.schedule", "version": 1, "steps": 5, "compute": [0, 2, 4]}')
    assert (s.compute, s.model, s.source, dict(s.params)) == ((0, 2, 4), "", "custom", {})


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", r"schedule JSON is not valid JSON \(Expecting property name .* at line 1, column 2\)"),
        ("[1, 2]", r"schedule JSON must be an object with format 'otcache.schedule'; got list"),
        ({"format": "otcache.presets", "version": 1}, r"not an OTCache schedule: format is 'otcache.presets', expected 'otcache.schedule'"),
        ({"steps": 5, "compute": [0, 4]}, r"format is None, expected 'otcache.schedule'"),
        ({"format": FORMAT, "version": 2, "steps": 5, "compute": [0, 4]},
         r"schedule format version 2 is not supported; this OTCache reads version 1 \(written by a newer"),
        ({"format": FORMAT, "version": 0, "steps": 5, "compute": [0, 4]}, r"version 0 is not supported; this OTCache reads version 1$"),
        ({"format": FORMAT, "version": "1", "steps": 5, "compute": [0, 4]}, r"version must be the integer 1; got '1'"),
        ({"format": FORMAT, "steps": 5, "compute": [0, 4]}, r"version must be the integer 1; got None"),
        ({"format": FORMAT, "version": 1, "steps": 5}, r"schedule JSON lacks compute"),
        ({"format": FORMAT, "version": 1}, r"schedule JSON lacks steps and compute"),
        ({"format": FORMAT, "version": 1, "steps": 5, "compute": [0, 4], "compte": []},
         r"unknown key\(s\) in schedule JSON: compte; known keys: compute, format"),
        ({"format": FORMAT, "version": 1, "steps": 5, "compute": "0,4"}, r"'compute' must be a list of step indices; got str"),
        ({"format": FORMAT, "version": 1, "steps": 5, "compute": [0, 5]}, r"step 5 is out of range for 5 steps"),
    ],
)
def test_from_json_rejects_bad_documents(data, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.from_json(data)
