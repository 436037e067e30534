"""HTTP routes for the frontend extension (``web/otcache.js``): live schedule previews.

The browser cannot evaluate the graph, and the schedule math stays in Python, so the
Budget Slider's strip and predicted speedup are computed here while the slider is
dragged, before anything is queued.

``POST /otcache/preview`` (also ``/api/otcache/preview``) -- the Budget Slider's output::

    {"reference": SOURCE, "anchor": SOURCE, "speedup": 2.5, "steps": 0, "mapping": "linear"}

``POST /otcache/schedule`` -- one schedule, e.g. what a Preset or Text node will output::

    {"schedule": SOURCE}

A SOURCE names a schedule the way the upstream node holds it:

- a string: the compact form ``"50:0-10,12,49"`` or a schedule JSON text (what
  OTCache Schedule (Text) holds in its ``text`` widget, or the compact string the
  frontend cached from any node's last run);
- ``{"text": "..."}``: the same, explicitly;
- ``{"preset": "lemica-flux1-dev-50-26"}``: a shipped preset (OTCache Schedule Preset's
  widget value), resolved here;
- a schedule JSON object (``{"format": "otcache.schedule", ...}``).

``steps`` (0 = the reference's step count) and ``mapping`` are the slider's other
widgets and are optional. The preview runs the node's own :func:`.slider.slider_schedule`, so it
gives exactly the schedule (and the error messages) the node gives when queued.

Answer (200)::

    {"schedule": "50:0,1,...", "steps": 50, "budget": 20, "speedup": 2.5,
     "mask": [1, 1, 0, ...], "text": "<what the node shows>", ...}

plus, for a preview, ``requested_speedup``, ``max_speedup`` (the anchor's speedup),
``lambda``, ``segment``, ``mapping``, ``reference``, ``anchor`` and, when something was
resampled, ``note``. Invalid input gets ``{"error": message}`` with status 400; an
unexpected failure is logged and answered ``{"error": message}`` with status 500. No
traceback is ever sent.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from ..otcache_core.interpolate import MAPPINGS
from ..otcache_core.presets import load_preset
from ..otcache_core.schedule import COMPACT_FORM_HINT, MAX_STEPS, Schedule, ScheduleError, clip
from .slider import describe, slider_schedule
from .ui_text import prompt_server

log = logging.getLogger("otcache")

PREVIEW_PATH = "/otcache/preview"
SCHEDULE_PATH = "/otcache/schedule"
MAX_SOURCE_CHARS = 200_000
MAX_BODY_BYTES = 4 * MAX_SOURCE_CHARS
PREVIEW_KEYS = ("reference", "anchor", "speedup", "steps", "mapping")
SCHEDULE_KEYS = ("schedule",)

_registered = False


class RequestError(ValueError):
    """A request the routes answer with status 400 and this message."""


# ---------------------------------------------------------------- request parsing


def _check_keys(payload: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise RequestError(f"the request body must be a JSON object with keys {', '.join(allowed)}; got {type(payload).__name__}")
    unknown = sorted(str(key) for key in payload if key not in allowed)
    if unknown:
        raise RequestError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    missing = [key for key in required if payload.get(key) is None]
    if missing:
        raise RequestError(f"missing {', '.join(missing)}")
    return payload


def resolve_source(source: Any, what: str) -> Schedule:
    """The schedule a SOURCE (see the module docstring) names; RequestError/ScheduleError if invalid."""
    if isinstance(source, str):
        text = source
    elif isinstance(source, Mapping) and source.get("format") is not None:
        try:
            return Schedule.from_json(source)
        except ScheduleError as error:
            raise RequestError(f"{what}: {error}") from None
    elif isinstance(source, Mapping) and len(source) == 1 and "preset" in source:
        name = source["preset"]
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f"{what}: the preset name must be a non-empty string; got {clip(name, 40)}")
        try:
            return load_preset(name)
        except ScheduleError as error:
            raise RequestError(f"{what}: {error}") from None
    elif isinstance(source, Mapping) and len(source) == 1 and "text" in source:
        text = source["text"]
        if not isinstance(text, str):
            raise RequestError(f"{what}: 'text' must be a string; got {type(text).__name__}")
    else:
        raise RequestError(
            f"{what} must be schedule text ({COMPACT_FORM_HINT}), {{\"text\": ...}}, "
            f"{{\"preset\": name}} or a schedule JSON object; got {_describe(source)}"
        )
    if len(text) > MAX_SOURCE_CHARS:
        raise RequestError(f"{what}: the schedule text is {len(text)} characters long; at most {MAX_SOURCE_CHARS}")
    try:  # Schedule.parse checks the step count before it expands anything
        return Schedule.parse(text)
    except ScheduleError as error:
        raise RequestError(f"{what}: {error}") from None


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object with keys " + (", ".join(sorted(map(str, value))) or "(none)")
    return type(value).__name__ if value is not None else "null"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{what} must be a finite number; got {clip(value, 40)}")
    return float(value)


def _steps(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise RequestError(f"steps must be a whole number (0 = the reference's step count); got {clip(value, 40)}")
    steps = int(value)
    if steps != 0 and not 2 <= steps <= MAX_STEPS:
        raise RequestError(f"steps must be 0 (the reference's step count) or 2..{MAX_STEPS}; got {steps}")
    return steps


# ---------------------------------------------------------------- answers


def schedule_answer(schedule: Schedule) -> dict[str, Any]:
    """The JSON fields every answer has: compact form, N, K, speedup and the mask."""
    return {
        "schedule": str(schedule),
        "steps": schedule.steps,
        "budget": schedule.budget,
        "speedup": schedule.speedup,
        "mask": [1 if computed else 0 for computed in schedule.mask],
        "model": schedule.model,
        "source": schedule.source,
    }


def preview(payload: Any) -> dict[str, Any]:
    """The Budget Slider's schedule for a preview request (RequestError/ScheduleError if invalid)."""
    body = _check_keys(payload, PREVIEW_KEYS, ("reference", "anchor", "speedup"))
    reference = resolve_source(body["reference"], "reference")
    anchor = resolve_source(body["anchor"], "anchor")
    speedup = _number(body["speedup"], "speedup")
    steps = _steps(body.get("steps"))
    mapping = body.get("mapping", "linear")
    if mapping is None:
        mapping = "linear"
    if mapping not in MAPPINGS:
        raise RequestError(f"mapping must be one of {', '.join(MAPPINGS)}; got {clip(mapping, 40)}")
    # The node's own computation, so a preview is exactly what queueing would give.
    result = slider_schedule(reference, anchor, speedup, steps, mapping)
    schedule = result.schedule
    params = schedule.params
    answer = schedule_answer(schedule)
    answer.update(
        text=result.text,
        requested_speedup=speedup,
        max_speedup=result.max_speedup,
        min_budget=result.min_budget,
        **{key: params[key] for key in ("lambda", "segment", "mapping", "reference", "anchor") if key in params},
    )
    if "note" in params:
        answer["note"] = params["note"]
    if "path" in params:
        answer["path"] = params["path"]
    answer["curve"] = result.curve
    return answer


def single(payload: Any) -> dict[str, Any]:
    """One resolved schedule, for Preset and Text nodes before they run."""

    body = _check_keys(payload, SCHEDULE_KEYS, SCHEDULE_KEYS)
    schedule = resolve_source(body["schedule"], "schedule")
    answer = schedule_answer(schedule)
    answer["text"] = describe(schedule)
    return answer


def answer_request(handler, raw: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON body for a request body ``raw`` handled by ``handler`` (preview or single)."""
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return 400, {"error": f"the request body is not valid JSON: {clip(str(error), 120)}"}
    except RecursionError:
        return 400, {"error": "the request body is nested too deeply; send a flat JSON object"}
    except ValueError as error:  # e.g. an integer of thousands of digits
        return 400, {"error": f"the request body holds a value that cannot be read: {clip(str(error), 120)}"}
    try:
        return 200, handler(payload)
    except (RequestError, ScheduleError) as error:
        return 400, {"error": clip_message(str(error))}
    except RecursionError:
        return 400, {"error": "the request is nested too deeply; send a flat JSON object"}
    except Exception as error:  # never send a traceback; keep it in the server log
        log.exception("OTCache: %s failed", getattr(handler, "__name__", "request"))
        return 500, {"error": f"internal error in OTCache ({type(error).__name__}: {clip(str(error), 200)}); see the ComfyUI log"}


def clip_message(message: str, limit: int = 600) -> str:
    """An error message of bounded length (the reasons are short; only quoted input can be long)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


# ---------------------------------------------------------------- registration


def register_routes(server: Any = None) -> bool:
    """Add the routes to ``PromptServer.instance.routes``; False (and no error) without a server.

    Idempotent: a second call registers nothing. Must run before ComfyUI builds its app
    (``comfy_entrypoint``/``on_load`` time), as every custom node route does.
    """
    global _registered
    if _registered:
        return True
    server = server if server is not None else prompt_server()
    routes = getattr(server, "routes", None)
    if routes is None:
        log.debug("OTCache: no PromptServer instance; preview routes not registered")
        return False
    from aiohttp import web

    def make(handler):
        async def route(request: "web.Request") -> "web.Response":
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                return web.json_response({"error": f"the request body is {request.content_length} bytes; "
                                                   f"at most {MAX_BODY_BYTES}"}, status=400)
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                return web.json_response({"error": f"the request body is over {MAX_BODY_BYTES} bytes"}, status=400)
            # Off the event loop: the server keeps answering while a preview is computed.
            status, body = await asyncio.get_running_loop().run_in_executor(None, answer_request, handler, raw)
            return web.json_response(body, status=status)

        route.__name__ = f"otcache_{handler.__name__}"
        return route

    routes.post(PREVIEW_PATH)(make(preview))
    routes.post(SCHEDULE_PATH)(make(single))
    _registered = True
    log.info("OTCache: preview routes %s and %s registered", PREVIEW_PATH, SCHEDULE_PATH)
    return True
