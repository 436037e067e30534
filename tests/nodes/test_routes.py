"""The preview routes behind the frontend's live Budget Slider (otcache_comfy/routes.py)."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest

from comfyui_otcache.nodes import schedule_nodes
from comfyui_otcache.otcache_comfy import routes
from comfyui_otcache.otcache_core.schedule import Schedule

REFERENCE = {"preset": "lemica-flux1-dev-50-26"}
ANCHOR_TEXT = "50:0,1,3,7,14,21,28,35,42,49"  # the published lemica-flux1-dev-50-10


def answer(handler, payload) -> tuple[int, dict]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return routes.answer_request(handler, raw)


def node_schedule(speedup, steps=0, mapping="linear"):
    reference = schedule_nodes.OTCacheSchedulePreset.execute(preset=REFERENCE["preset"]).args[0]
    anchor = schedule_nodes.OTCacheScheduleFromText.execute(text=ANCHOR_TEXT).args[0]
    return schedule_nodes.OTCacheBudgetSlider.execute(
        reference=reference, anchor=anchor, speedup=speedup, steps=steps, mapping=mapping
    ).args[0]


@pytest.mark.parametrize("speedup,steps,mapping", [(1.0, 0, "linear"), (2.5, 0, "linear"), (3.3, 0, "log"), (5.0, 0, "linear"),
                                                   (2.0, 10, "linear"), (3.0, 28, "log")])
def test_preview_is_exactly_what_the_node_outputs(speedup, steps, mapping):
    status, body = answer(routes.preview, {"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": speedup, "steps": steps,
                                           "mapping": mapping})
    assert status == 200, body
    expected = node_schedule(speedup, steps, mapping)
    assert body["schedule"] == str(expected)
    assert (body["steps"], body["budget"]) == (expected.steps, expected.budget)
    assert body["speedup"] == pytest.approx(expected.steps / expected.budget)
    assert body["mask"] == [int(m) for m in expected.mask]
    assert body["lambda"] == pytest.approx(expected.params["lambda"])
    assert body["max_speedup"] == pytest.approx(expected.steps / body["min_budget"])
    assert body["text"].startswith(str(expected))
    json.dumps(body, allow_nan=False)


def test_preview_accepts_every_source_form():
    anchor = Schedule.parse(ANCHOR_TEXT)
    forms = [ANCHOR_TEXT, {"text": ANCHOR_TEXT}, {"preset": "lemica-flux1-dev-50-10"}, anchor.to_dict(), anchor.to_json()]
    answers = {json.dumps(answer(routes.preview, {"reference": REFERENCE, "anchor": form, "speedup": 3.0})[1], sort_keys=True)
               for form in forms}
    assert len(answers) == 1


def test_single_schedule_for_preset_and_text_nodes():
    status, body = answer(routes.single, {"schedule": {"preset": "lemica-flux1-dev-50-10"}})
    assert status == 200 and body["schedule"] == ANCHOR_TEXT and body["budget"] == 10 and body["speedup"] == 5.0
    assert body["mask"][:4] == [1, 1, 0, 1] and len(body["mask"]) == 50
    status, body = answer(routes.single, {"schedule": {"text": " 10:0-3, 9 "}})
    assert status == 200 and body["schedule"] == "10:0,1,2,3,9" and body["model"] == ""


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 9.0}, "speedup 9 is out of range: choose 1.00 .. 5.00"),
        ({"reference": ANCHOR_TEXT, "anchor": REFERENCE, "speedup": 2.0}, "must be below the reference's"),
        ({"reference": REFERENCE, "anchor": "50:0,1,3", "speedup": 2.0}, "anchor: a schedule must compute step 49"),
        ({"reference": REFERENCE, "anchor": "fifty:0", "speedup": 2.0}, "is not a whole number"),
        ({"reference": {"preset": "lemica-flux-dev-50-26"}, "anchor": ANCHOR_TEXT, "speedup": 2.0},
         "unknown preset 'lemica-flux-dev-50-26'; did you mean"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": "fast"}, "speedup must be a finite number"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": True}, "speedup must be a finite number"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 0.5}, "out of range"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.0, "steps": 1}, "steps must be 0"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.0, "steps": 2.5}, "steps must be a whole number"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.0, "steps": 10**6}, "steps must be 0"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.0, "mapping": "cubic"}, "mapping must be one of linear, log"),
        ({"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.0, "speed": 1}, "unknown key(s) speed"),
        ({"reference": REFERENCE, "speedup": 2.0}, "missing anchor"),
        ({"reference": 50, "anchor": ANCHOR_TEXT, "speedup": 2.0}, "reference must be schedule text"),
        ({"reference": {"url": "x"}, "anchor": ANCHOR_TEXT, "speedup": 2.0}, "an object with keys url"),
        ({"reference": "1000000000:0,999999999", "anchor": ANCHOR_TEXT, "speedup": 2.0}, "schedules have at most 10000 steps"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_previews_get_a_400_with_a_message(payload, message):
    status, body = answer(routes.preview, payload)
    assert status == 400 and set(body) == {"error"}, body
    assert message in body["error"]
    assert "Traceback" not in body["error"]


def test_nan_and_bad_json_are_rejected():
    assert answer(routes.preview, b'{"reference": "10:0,9", "anchor": "10:0,9", "speedup": NaN}')[0] == 400
    status, body = answer(routes.preview, b"{not json")
    assert status == 400 and body["error"].startswith("the request body is not valid JSON")
    status, body = answer(routes.single, b"\xff\xfe")
    assert status == 400


def test_an_unexpected_failure_is_a_500_without_traceback():
    def broken(payload):
        raise KeyError("boom")

    status, body = answer(broken, {})
    assert status == 500 and set(body) == {"error"} and "KeyError" in body["error"] and "Traceback" not in body["error"]


def test_registration_without_a_server_does_nothing(monkeypatch):
    monkeypatch.setattr(routes, "_registered", False)
    monkeypatch.delitem(sys.modules, "server", raising=False)
    assert routes.register_routes() is False

    class NoInstance:  # a server module imported, but no PromptServer running
        PromptServer = type("PromptServer", (), {})

    monkeypatch.setitem(sys.modules, "server", NoInstance)
    assert routes.register_routes() is False


def test_registration_adds_both_routes_once(monkeypatch):
    from aiohttp import web

    monkeypatch.setattr(routes, "_registered", False)
    table = web.RouteTableDef()
    server = type("FakeServer", (), {"routes": table})()
    assert routes.register_routes(server) is True
    assert routes.register_routes(server) is True  # idempotent
    assert sorted((r.method, r.path) for r in table) == [("POST", "/otcache/preview"), ("POST", "/otcache/schedule")]


# ---------------------------------------------------------------- through a real server


def post(server, path, payload) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.server
def test_routes_answer_on_the_real_server(comfy_server):
    for prefix in ("", "/api"):
        status, body = post(comfy_server, prefix + "/otcache/preview", {"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 2.5})
        assert status == 200 and body["schedule"] == str(node_schedule(2.5))
        status, body = post(comfy_server, prefix + "/otcache/schedule", {"schedule": {"text": "10:0,5,9"}})
        assert status == 200 and body["mask"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    status, body = post(comfy_server, "/api/otcache/preview", {"reference": REFERENCE, "anchor": ANCHOR_TEXT, "speedup": 6})
    assert status == 400 and "out of range" in body["error"] and set(body) == {"error"}
