"""Hostile input: every way in answers with a short, clear error, fast, and never a raw exception.

Fuzzed with hypothesis over ``Schedule.parse``, ``Schedule.from_json``, preset names and
the preview route bodies, plus the concrete cases a hostile trial found (huge numbers,
non-ASCII digits, deep JSON, ranges of millions of steps, long non-Latin file names).
"""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_otcache.nodes import schedule_nodes
from comfyui_otcache.otcache_comfy import routes, schedule_files
from comfyui_otcache.otcache_core.presets import load_preset
from comfyui_otcache.otcache_core.schedule import MAX_STEPS, Schedule, ScheduleError

MAX_MESSAGE = 700  # characters: every error names the problem and the form, and quotes little
MAX_SECONDS = 0.5

HOSTILE_TEXTS = [
    "9" * 400 + ":0,1", "9" * 5000 + ":0,1", "10:0," + "9" * 4400, "10:0-" + "9" * 5000,
    "²:0,1", "10:0,²", "１０:0,9", "١٠:0,9", "10:0,٩", "10:0,９",
    "100:0-10000000", "0-30000000", "10000000:0-9999999", "1000000000:0,999999999", "10001:0,10000",
    "10:" + ",".join(["5"] * 100000), "10:" + "0-9," * 50000 + "9",
    "[" * 100000, "{" * 5000, '{"format": "otcache.schedule", "version": 1, "steps": 10, "compute": ' + "[" * 100000,
    '{"format": "otcache.schedule", "version": 1, "steps": ' + "9" * 5000 + ', "compute": [0]}',
    '{"format": "otcache.schedule", "version": 1, "steps": 6000000, "compute": [' + ",".join(map(str, range(200000))) + "]}",
    '{"format": "otcache.schedule", "version": 1, "steps": 10, "compute": [0, 9], "params": ' + '{"a":' * 2000 + "1" + "}" * 2000 + "}",
    "x" * 2_000_000, "\x00" * 100, "10:0,-1,9", "-5:0", "10:0,9.0", "10:0,1e1",
]
HOSTILE_PRESETS = ["uniform-2000000-2000000", "full-99999999999999999999", "uniform-" + "9" * 5000 + "-2",
                   "uniform-١٠-2", "full-²", "lemica-" + "x" * 100000, "uniform-10-20"]


def timed(fn, *args):
    start = time.perf_counter()
    try:
        return fn(*args), None, time.perf_counter() - start
    except ScheduleError as error:
        return None, error, time.perf_counter() - start


@pytest.mark.parametrize("index", range(len(HOSTILE_TEXTS)))
def test_hostile_schedule_text_is_refused_fast_and_briefly(index):
    text = HOSTILE_TEXTS[index]
    result, error, seconds = timed(Schedule.parse, text)
    assert result is None, f"accepted {text[:40]!r}"
    assert len(str(error)) <= MAX_MESSAGE and seconds < MAX_SECONDS, (len(str(error)), seconds)


@pytest.mark.parametrize("name", HOSTILE_PRESETS)
def test_hostile_preset_names_are_refused_fast(name):
    result, error, seconds = timed(load_preset, name)
    assert result is None and len(str(error)) <= MAX_MESSAGE and seconds < MAX_SECONDS


def test_only_ascii_digits_are_numbers_and_the_step_limit_is_one():
    for text in ("١٠:0,9", "１０:0,9", "10:0,٩", "²:0,1"):
        with pytest.raises(ScheduleError, match="not a whole number|not a step number"):
            Schedule.parse(text)
    assert Schedule.parse(f"{MAX_STEPS}:0,{MAX_STEPS - 1}").steps == MAX_STEPS
    for make in (lambda: Schedule.parse(f"{MAX_STEPS + 1}:0,{MAX_STEPS}"), lambda: load_preset(f"full-{MAX_STEPS + 1}"),
                 lambda: Schedule(MAX_STEPS + 1, [0, MAX_STEPS]), lambda: Schedule.uniform(MAX_STEPS + 1, 3)):
        with pytest.raises(ScheduleError, match=f"at most {MAX_STEPS} steps"):
            make()


def test_error_messages_quote_only_a_short_piece_of_the_input():
    with pytest.raises(ScheduleError) as error:
        Schedule.parse("10:0," + "x" * 1_000_000)
    assert len(str(error.value)) < MAX_MESSAGE and "characters" in str(error.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parse_fuzz_only_schedule_errors(text):
    try:
        schedule = Schedule.parse(text)
    except ScheduleError as error:
        assert len(str(error)) <= MAX_MESSAGE
    else:
        assert Schedule.parse(str(schedule)) == schedule


compact_alphabet = st.sampled_from(list("0123456789:,- ") + ["²", "٣", "９", "99999999", "{", "["])


@settings(max_examples=300, deadline=None)
@given(st.lists(compact_alphabet, max_size=60).map("".join))
def test_parse_fuzz_near_valid_compact_text(text):
    start = time.perf_counter()
    try:
        Schedule.parse(text)
    except ScheduleError as error:
        assert len(str(error)) <= MAX_MESSAGE
    assert time.perf_counter() - start < MAX_SECONDS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"format": st.sampled_from(["otcache.schedule", "x", 1]), "version": st.sampled_from([1, 2, "1", True])},
                             optional={"steps": json_values | st.integers(-5, 20000), "compute": json_values,
                                       "params": json_values, "metrics": json_values, "model": json_values,
                                       "extra": json_values}))
@pytest.mark.slow  # hundreds of hypothesis examples
def test_from_json_fuzz_only_schedule_errors(document):
    for form in (document, json.dumps(document)):
        try:
            Schedule.from_json(form)
        except ScheduleError as error:
            assert len(str(error)) <= MAX_MESSAGE


@pytest.mark.slow  # hundreds of hypothesis examples
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.from_regex(r"(uniform|full)-[0-9]{1,12}(-[0-9]{1,12})?", fullmatch=True))
def test_preset_name_fuzz(name):
    try:
        load_preset(name)
    except ScheduleError as error:
        assert len(str(error)) <= MAX_MESSAGE


bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"reference": json_values | st.sampled_from(HOSTILE_TEXTS[:12]),
                           "anchor": json_values | st.just("50:0,1,3,7,14,21,28,35,42,49"),
                           "speedup": json_values | st.floats(0, 30)},
                          optional={"steps": json_values, "mapping": json_values}),
)


@pytest.mark.slow  # hundreds of hypothesis examples
@settings(max_examples=300, deadline=None)
@given(bodies, st.sampled_from([routes.preview, routes.single]))
def test_route_body_fuzz_never_500(body, handler):
    start = time.perf_counter()
    status, answer = routes.answer_request(handler, json.dumps(body).encode())
    assert status in (200, 400), answer
    assert time.perf_counter() - start < MAX_SECONDS
    if status == 400:
        assert set(answer) == {"error"} and len(answer["error"]) <= MAX_MESSAGE


@pytest.mark.parametrize("raw", [b"[" * 100000, b'{"a": ' * 5000, b'{"speedup": ' + b"9" * 5000 + b"}",
                                 "{\"reference\": \"²:0,1\"}".encode(), b"\xff" * 10])
def test_hostile_raw_bodies_are_400(raw):
    for handler in (routes.preview, routes.single):
        status, answer = routes.answer_request(handler, raw)
        assert status == 400 and len(answer["error"]) <= MAX_MESSAGE


def test_text_node_and_load_node_refuse_briefly(tmp_path, monkeypatch):
    for text in HOSTILE_TEXTS[:20]:
        with pytest.raises(ScheduleError) as error:
            schedule_nodes.OTCacheScheduleFromText.execute(text=text)
        assert len(str(error.value)) <= MAX_MESSAGE + 200  # plus the form hint
    folder = tmp_path / "schedules"
    folder.mkdir()
    monkeypatch.setattr(schedule_files, "schedule_folders", lambda: [str(folder)])
    monkeypatch.setattr(schedule_files.folder_paths, "get_full_path", lambda _kind, name: str(folder / name))
    (folder / "deep.json").write_text("[" * 100000)
    (folder / "huge.json").write_text("[" + "0," * 3_000_000 + "0]")
    (folder / "digits.json").write_text('{"format": "otcache.schedule", "version": 1, "steps": ' + "9" * 5000 + "}")
    for name in ("deep.json", "huge.json", "digits.json"):
        start = time.perf_counter()
        with pytest.raises(ScheduleError) as error:
            schedule_files.read_schedule_file(name)
        assert len(str(error.value)) <= MAX_MESSAGE + 200 and time.perf_counter() - start < MAX_SECONDS


def test_save_refuses_a_name_too_long_in_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(schedule_files, "schedule_folders", lambda: [str(tmp_path)])
    with pytest.raises(ScheduleError, match="bytes in UTF-8"):
        schedule_files.write_schedule_file(Schedule.parse("10:0,9"), "日本語" * 36)
    assert list(tmp_path.iterdir()) == []
    path = schedule_files.write_schedule_file(Schedule.parse("10:0,9"), "日本語" * 20)
    assert Schedule.from_json(open(path, encoding="utf-8").read()) == Schedule.parse("10:0,9")


@pytest.mark.server
def test_a_real_server_answers_hundreds_of_hostile_bodies_with_json_400(comfy_server):
    """Hostile bodies against the live routes: counted by status, each timed; /queue stays responsive."""
    import concurrent.futures
    import random
    import urllib.error
    import urllib.request

    rng = random.Random(7)
    anchor = "50:0,1,3,7,14,21,28,35,42,49"
    sources = HOSTILE_TEXTS[:20] + [{"preset": name} for name in HOSTILE_PRESETS[:5]] + [
        {"text": t} for t in HOSTILE_TEXTS[:8]] + [50, None, [], {"format": "otcache.schedule", "version": 1}]
    bodies = []
    for _ in range(240):
        body = {"reference": rng.choice(sources), "anchor": rng.choice([anchor, *sources[:6]]),
                "speedup": rng.choice([2.0, -1, 1e308, "x", None, 10**40])}
        bodies.append(("/otcache/preview", json.dumps(body).encode()))
    for raw in (b"[" * 100000, b'{"schedule": ' * 3000, b"\xff\xfe", b'{"schedule": "' + "²".encode() * 10 + b':0"}'):
        bodies += [("/otcache/schedule", raw), ("/otcache/preview", raw)]
    bodies += [("/otcache/schedule", json.dumps({"schedule": s}).encode()) for s in sources]

    def post(path, raw):
        request = urllib.request.Request(comfy_server.url + path, data=raw, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content_type, text = response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as error:
            status, content_type, text = error.code, error.headers.get_content_type(), error.read()
        return status, content_type, text, time.perf_counter() - start

    counts: dict[int, int] = {}
    slowest = 0.0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda item: post(*item), bodies))
    for status, content_type, text, seconds in results:
        counts[status] = counts.get(status, 0) + 1
        slowest = max(slowest, seconds)
        assert content_type == "application/json", text[:200]
        assert status in (200, 400), text[:300]
        if status == 400:
            assert len(json.loads(text)["error"]) <= MAX_MESSAGE
    print(f"\n{len(bodies)} hostile bodies: status counts {counts}, slowest {slowest:.3f} s")
    assert counts.get(400, 0) >= len(bodies) - 20 and slowest < 2 * MAX_SECONDS  # HTTP round trip included

    # A GET /queue sent while previews are computed is answered at once.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(post, "/otcache/preview", json.dumps(
            {"reference": "10000:0-9999", "anchor": "10000:0,9999", "speedup": 2.0}).encode()) for _ in range(2)]
        start = time.perf_counter()
        with urllib.request.urlopen(comfy_server.url + "/queue", timeout=30) as response:
            assert response.status == 200
        waited = time.perf_counter() - start
        for future in busy:
            assert future.result()[0] in (200, 400)
    assert waited < MAX_SECONDS, waited
