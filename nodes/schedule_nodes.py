"""OTCache schedule nodes: make, pick, type in, load and save caching schedules.

- OTCache Budget Slider: a speedup between full compute and the anchor -> the
  schedule on the measured budget path, or the OT-interpolated one (docs/design.md section 5).
- OTCache Schedule Preset / Schedule (Text) / Load Schedule / Save Schedule: one
  node per way a schedule enters or leaves a graph.

Every node that produces a schedule shows it on the node: a text summary (``ui.text``,
also sent as progress text when a server runs, since the frontend does not draw
``ui.text`` on its own) and the schedule's JSON object under ``ui["otcache_schedule"]``
for a frontend extension that draws a strip. The nodes work when called directly from
Python (``cls.hidden`` is None and no PromptServer runs).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re

import folder_paths
from comfy_api.latest import io

from ..otcache_core.atomic import write_atomic
from ..otcache_core.budget_path import path_for, path_schedule
from ..otcache_core.interpolate import MAPPINGS, budget_for_speedup, budget_range, interpolate
from ..otcache_core.presets import list_presets, load_preset
from ..otcache_core.schedule import COMPACT_FORM_HINT, MAX_TEXT_CHARS, Schedule, ScheduleError, clip
from .types import CATEGORY, OTSchedule
from .ui_text import send_node_text

log = logging.getLogger("otcache")

SCHEDULES_FOLDER = "otcache_schedules"
SCHEDULE_EXTENSION = ".json"
MAX_SPEEDUP_WIDGET = 20.0  # the slider's range; the real maximum is the anchor's speedup
SPEEDUP_TOLERANCE = 1e-6
UNIFORM_PRESETS = ("uniform-50-25", "uniform-50-20", "uniform-50-15", "uniform-50-10")
DEFAULT_TEXT = "50:0-10,12,15,18,20,25,30,35,39,42,44-49"
_MAX_FILENAME = 200
_MAX_FILENAME_BYTES = 255
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


# ---------------------------------------------------------------- the models folder


def register_schedule_folder() -> None:
    """Register ``models/otcache_schedules`` with folder_paths, keeping what is there.

    A fresh entry accepts ``.json`` files only. When ``extra_model_paths.yaml`` already
    created the entry, the default folder is appended (``add_model_folder_path``
    semantics: the user's folders stay first, so saving goes to theirs) and an
    accept-everything extension set is narrowed to ``.json``.
    """
    default = os.path.join(folder_paths.models_dir, SCHEDULES_FOLDER)
    if SCHEDULES_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[SCHEDULES_FOLDER] = ([default], {SCHEDULE_EXTENSION})
        return
    folder_paths.add_model_folder_path(SCHEDULES_FOLDER, default)
    _paths, extensions = folder_paths.folder_names_and_paths[SCHEDULES_FOLDER]
    if isinstance(extensions, set) and not extensions:
        extensions.add(SCHEDULE_EXTENSION)


register_schedule_folder()


def schedule_folders() -> list[str]:
    """The otcache_schedules folders, the first being where schedules are saved."""
    return folder_paths.get_folder_paths(SCHEDULES_FOLDER)


def schedule_files() -> list[str]:
    """The schedule files (relative names) in all otcache_schedules folders, sorted."""
    try:
        return folder_paths.get_filename_list(SCHEDULES_FOLDER)
    except OSError as error:  # an unreadable folder must not break the node list
        log.warning("OTCache: cannot list %s: %s", SCHEDULES_FOLDER, error)
        return []


def safe_schedule_filename(filename: str) -> str:
    """A checked file name ``<name>.json`` for saving, or ScheduleError saying what is wrong.

    Allowed: letters, digits, ``-``, ``_``, ``.`` and spaces; no folders (``/`` or
    ``\\``), no ``..``, no leading dot, not a Windows device name. ``.json`` is added
    when missing.
    """
    if not isinstance(filename, str):
        raise ScheduleError(f"the file name must be text; got {type(filename).__name__}")
    name = filename.strip()
    if name.lower().endswith(SCHEDULE_EXTENSION):
        name = name[: -len(SCHEDULE_EXTENSION)].rstrip()
    if not name:
        raise ScheduleError('the file name is empty; type a name such as "flux-dev-2.5x"')
    if "/" in name or "\\" in name or ".." in name:
        raise ScheduleError(
            f"the file name {clip(filename)} points outside the {SCHEDULES_FOLDER} folder; use a plain "
            "name without '/', '\\' or '..' (schedules are saved directly in the folder)"
        )
    if not re.fullmatch(r"[\w\-. ]+", name):
        bad = sorted({c for c in name if not re.fullmatch(r"[\w\-. ]", c)})
        raise ScheduleError(
            f"the file name {clip(filename)} contains {' '.join(repr(c) for c in bad[:10])}; use letters, "
            "digits, '-', '_', '.' and spaces only"
        )
    if name.startswith("."):
        raise ScheduleError(f"the file name {clip(filename)} starts with '.', which hides the file; start with a letter or digit")
    if name.endswith("."):
        raise ScheduleError(f"the file name {clip(filename)} ends with '.'; remove it")
    if name.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        raise ScheduleError(f"the file name {clip(filename)} is a reserved device name on Windows; choose another")
    if len(name) + len(SCHEDULE_EXTENSION) > _MAX_FILENAME:
        raise ScheduleError(f"the file name is {len(name)} characters long; keep it under {_MAX_FILENAME - 5}")
    encoded = len(name.encode("utf-8")) + len(SCHEDULE_EXTENSION)
    if encoded > _MAX_FILENAME_BYTES:  # file systems count bytes: 255 in UTF-8, so CJK names hit it first
        raise ScheduleError(f"the file name takes {encoded} bytes in UTF-8; file systems allow "
                            f"{_MAX_FILENAME_BYTES}: shorten it (non-Latin letters take 2-4 bytes each)")
    return name + SCHEDULE_EXTENSION


def _inside(path: str, folder: str) -> bool:
    real_folder = os.path.realpath(folder)
    real_path = os.path.realpath(path)
    return os.path.dirname(real_path) == real_folder


def write_schedule_file(schedule: Schedule, filename: str, overwrite: bool = False) -> str:
    """Save ``schedule`` as JSON into the first otcache_schedules folder; return the path.

    The name is checked by :func:`safe_schedule_filename` and the resolved path must
    lie directly in the folder (a symlink pointing elsewhere is refused). An existing
    file is replaced only with ``overwrite``. The JSON goes to a temporary file in the
    same folder first and is moved into place with ``os.replace``, so a crash never
    leaves a half-written schedule.
    """
    name = safe_schedule_filename(filename)
    folder = schedule_folders()[0]
    path = os.path.join(folder, name)
    if not _inside(path, folder):
        raise ScheduleError(f"refusing to save {name}: it resolves to {os.path.realpath(path)}, outside {folder}")
    if os.path.exists(path) and not overwrite:
        raise ScheduleError(
            f"{name} already exists in {folder}; turn on 'overwrite' to replace it, or choose another file name"
        )
    write_atomic(path, schedule.to_json(indent=2) + "\n")
    return path


def read_schedule_file(name: str) -> Schedule:
    """The schedule in ``name`` (a file listed by :func:`schedule_files`); errors name the file."""
    path = folder_paths.get_full_path(SCHEDULES_FOLDER, name) if isinstance(name, str) and name else None
    if path is None:
        raise ScheduleError(
            f"schedule file {clip(name)} was not found in {', '.join(schedule_folders())}; put the .json file "
            "there and refresh the browser page (R) to update the list"
        )
    try:
        size = os.path.getsize(path)
        if size > MAX_TEXT_CHARS:  # checked before reading: a schedule file is small
            raise ScheduleError(f"schedule file {name} is {size} bytes; a schedule file is at most "
                                f"{MAX_TEXT_CHARS} (is it really a schedule?)")
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ScheduleError(f"schedule file {name} cannot be read: {clip(str(error), 120)}") from None
    try:
        return Schedule.from_json(text)
    except ScheduleError as error:
        raise ScheduleError(f"schedule file {name} ({path}): {error}") from None


# ---------------------------------------------------------------- showing a schedule


def _floor2(value: float) -> str:
    """``value`` rounded down to 2 decimals, so a stated maximum is always allowed."""
    return f"{math.floor(value * 100 + 1e-9) / 100:.2f}"


def describe(schedule: Schedule) -> str:
    """Two lines: the compact form, then budget, steps and ideal speedup."""
    return (
        f"{schedule}\n"
        f"K = {schedule.budget} of N = {schedule.steps} steps computed, "
        f"predicted speedup {schedule.speedup:.2f}x"
    )


def show(cls: type[io.ComfyNode], schedule: Schedule | None, text: str) -> dict:
    """The ``ui`` payload for a node showing ``text`` (and ``schedule``), also sent as progress text.

    ``ui["text"]`` is the text, ``ui["otcache_schedule"]`` the schedule's JSON object
    (empty list when there is none). Progress text is sent only when a server runs and
    the node knows its id.
    """
    send_node_text(getattr(cls.hidden, "unique_id", None) if cls.hidden is not None else None, text)
    return {"text": [text], "otcache_schedule": [schedule.to_dict()] if schedule is not None else []}


def _with_text_hint(error: ScheduleError) -> ScheduleError:
    message = str(error)
    if COMPACT_FORM_HINT not in message:
        message = f"{message}; schedule text: {COMPACT_FORM_HINT}, or a schedule JSON object"
    return ScheduleError(message)


# ---------------------------------------------------------------- Budget Slider


def curve_payload(path, budget: int) -> dict:
    """What the frontend draws under the slider: objective per measured budget, and where the slider is."""
    return {"metric": path.metric, "steps": path.steps, "budget": budget, "points": path.curve()}


def _on_path(path, plain: Schedule, budget: int) -> Schedule:
    """The measured path's schedule at ``budget`` (same metadata as the plain OT one, params saying which)."""
    knot = path.knot_at(budget)
    if knot is not None:
        how = f"measured knot at K={budget}: {path.metric} {knot.objective:.4g} ({knot.origin})"
    elif budget > path.knots[-1].budget:
        how = f"OT from full compute to the measured knot at K={path.knots[-1].budget}"
    else:
        lower = max(k.budget for k in path.knots if k.budget < budget)
        upper = min(k.budget for k in path.knots if k.budget > budget)
        how = f"OT between the measured knots at K={lower} and K={upper}"
    params = {key: plain.params[key] for key in ("mapping", "reference", "anchor", "note") if key in plain.params}
    params.update(path=how, segment="measured path", **({"objective": knot.objective} if knot else {}))
    return path_schedule(path, budget, model=plain.model, sampler=plain.sampler, scheduler=plain.scheduler,
                         source="interpolated", params=params)


class OTCacheBudgetSlider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheBudgetSlider",
            display_name="OTCache Budget Slider",
            category=CATEGORY,
            description=(
                "Pick a speedup and get a caching schedule for it. Between full compute and the reference "
                "the schedule moves from computing every step to the reference; between the reference and "
                "the anchor it follows the optimal-transport path between the two searched schedules. "
                "The node shows the schedule, its budget K of N steps, the predicted speedup N/K and lambda."
            ),
            inputs=[
                OTSchedule.Input("reference", tooltip=("The careful schedule at a conservative budget (a "
                                                       "preset, a loaded file or OTCache Reference).")),
                OTSchedule.Input("anchor", tooltip=("The schedule at an extreme budget, with fewer computed steps than "
                                                    "the reference. Its speedup is the slider's maximum.")),
                io.Float.Input("speedup", default=2.0, min=1.0, max=MAX_SPEEDUP_WIDGET, step=0.01, round=0.01,
                               display_mode=io.NumberDisplay.slider, tooltip=(
                    "Ideal speedup N/K of the transformer calls: 1.0 computes every step, the anchor's speedup "
                    "gives the anchor. Values above the anchor's speedup stop with an error naming the range.")),
                io.Int.Input("steps", default=0, min=0, max=10000, optional=True, tooltip=(
                    "The sampler's step count. 0 keeps the reference's step count; another value resamples "
                    "reference and anchor to it first (same shape and speedup).")),
                io.Combo.Input("mapping", options=list(MAPPINGS), default="linear", advanced=True, tooltip=(
                    "How the budget K sets the interpolation weight lambda: linear in K, or linear in log K "
                    "(stays nearer the reference longer and moves to the anchor mostly at the lowest budgets).")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip="The interpolated schedule, for OTCache Cached Model.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, reference, anchor, speedup, steps=0, mapping="linear") -> io.NodeOutput:
        n_wanted = None if not steps else steps
        anchor_budget, n = budget_range(reference, anchor, n_wanted)
        max_speedup = n / anchor_budget
        if not isinstance(speedup, (int, float)) or isinstance(speedup, bool) or not math.isfinite(speedup):
            raise ScheduleError(f"speedup must be a number; got {speedup!r}")
        if speedup < 1.0 - SPEEDUP_TOLERANCE or speedup > max_speedup + SPEEDUP_TOLERANCE:
            resampled = f", at {n} steps" if n != anchor.steps else ""
            raise ScheduleError(
                f"speedup {speedup:g} is out of range: choose 1.00 .. {_floor2(max_speedup)} "
                f"(1.00 computes every step; the anchor's speedup is {max_speedup:.3f}x, budget "
                f"{anchor_budget} of {n} steps{resampled}). For more speed, use an anchor with fewer computed steps."
            )
        budget = budget_for_speedup(n, min(max(float(speedup), 1.0), max_speedup))
        schedule = interpolate(reference, anchor, budget, mapping=mapping, steps=n_wanted)
        path = path_for(reference, anchor, n)
        if path is not None:
            schedule = _on_path(path, schedule, budget)
        schedule = schedule.with_metadata(params={**schedule.params, "requested_speedup": float(speedup)})
        params = schedule.params
        if "path" in params:
            lines = [describe(schedule), params["path"]]
        else:
            segment = "full -> reference" if params["segment"] == "full-reference" else "reference -> anchor"
            lines = [describe(schedule), f"lambda = {params['lambda']:.3f} ({segment}, {params['mapping']})"]
            if anchor.params.get("path") is not None:
                lines.append("the anchor's measured path is not used: it was measured for another reference or "
                             f"step count (set steps to {anchor.steps} and connect the reference it was searched with)")
        if "note" in params:
            lines.append(f"note: {params['note']}")
        ui = show(cls, schedule, "\n".join(lines))
        ui["otcache_curve"] = [curve_payload(path, budget)] if path is not None else []
        return io.NodeOutput(schedule, ui=ui)


# ---------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """The shipped presets' names, then a few uniform schedules (any model)."""
    try:
        names = [preset.name for preset in list_presets()]
    except ScheduleError as error:  # a broken shipped file must not hide the node
        log.warning("OTCache: cannot read the shipped presets: %s", error)
        names = []
    return names + [name for name in UNIFORM_PRESETS if name not in names]


def _preset_text(name: str, schedule: Schedule) -> str:
    model = schedule.model or "any model"
    head = f"{name}: {model}, {schedule.steps} steps, budget {schedule.budget}"
    attribution = schedule.params.get("attribution")
    lines = [head, describe(schedule)]
    if schedule.source != "custom":
        lines.append(f"source: {schedule.source}" + (f" ({attribution})" if attribution else ""))
    return "\n".join(lines)


class OTCacheSchedulePreset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = preset_names()
        return io.Schema(
            node_id="OTCacheSchedulePreset",
            display_name="OTCache Schedule Preset",
            category=CATEGORY,
            description=(
                "A shipped caching schedule, so no search is needed: the schedules published with LeMiCa "
                "for FLUX, Qwen-Image, HunyuanVideo, Wan2.1 and Z-Image, and uniform schedules for any model. "
                "Use a high-budget one as the Budget Slider's reference and a low-budget one as its anchor, "
                "or feed it straight to OTCache Cached Model."
            ),
            inputs=[
                io.Combo.Input("preset", options=names, default=names[0] if names else None, tooltip=(
                    "lemica-<model>-<steps>-<budget>: published for that model at <steps> sampler steps, "
                    "computing <budget> of them (speedup steps/budget). uniform-<steps>-<budget>: computed "
                    "steps spread evenly, for any model. Other sampler step counts are resampled by Cached Model.")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip="The preset's schedule.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, preset) -> io.NodeOutput:
        schedule = load_preset(preset)
        return io.NodeOutput(schedule, ui=show(cls, schedule, _preset_text(preset, schedule)))


# ---------------------------------------------------------------- text


class OTCacheScheduleFromText(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheScheduleFromText",
            display_name="OTCache Schedule (Text)",
            category=CATEGORY,
            description=(
                "A caching schedule typed in: N:steps, e.g. 50:0,1,2,5,10,20,49 (ranges such as 0-10 are "
                "allowed), or a schedule's JSON. Step 0 and step N-1 must be computed. The text is saved "
                "with the workflow, so this is also how a schedule travels inside a workflow file."
            ),
            inputs=[
                io.String.Input("text", default=DEFAULT_TEXT, multiline=False, placeholder="50:0,1,2,5,10,20,49", tooltip=(
                    "N:s0,s1,... - the sampler's step count N, then the computed step indices (0 to N-1, "
                    "ascending, 0 and N-1 included; a-b is a range). A schedule JSON object also works.")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip="The schedule the text describes.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        try:
            schedule = Schedule.parse(text)
        except ScheduleError as error:
            raise _with_text_hint(error) from None
        return io.NodeOutput(schedule, ui=show(cls, schedule, describe(schedule)))


# ---------------------------------------------------------------- load and save


class OTCacheScheduleLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = schedule_files()
        return io.Schema(
            node_id="OTCacheScheduleLoad",
            display_name="OTCache Load Schedule",
            category=CATEGORY,
            description=(
                "Loads a caching schedule saved as JSON in ComfyUI's models/otcache_schedules folder (by "
                "OTCache Save Schedule, or copied there). Editing the file makes the node run again."
            ),
            inputs=[
                io.Combo.Input("schedule_file", options=files, default=files[0] if files else None, tooltip=(
                    "A .json schedule in models/otcache_schedules (or a folder added for otcache_schedules in "
                    "extra_model_paths.yaml). Refresh the page (R) after adding files.")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip="The schedule stored in the file.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, schedule_file) -> str:
        path = folder_paths.get_full_path(SCHEDULES_FOLDER, schedule_file) if schedule_file else None
        if path is None:
            return f"missing:{schedule_file}"
        try:
            with open(path, "rb") as stream:
                return hashlib.sha256(stream.read()).hexdigest()
        except OSError:
            return f"unreadable:{schedule_file}"

    @classmethod
    def execute(cls, schedule_file) -> io.NodeOutput:
        schedule = read_schedule_file(schedule_file)
        return io.NodeOutput(schedule, ui=show(cls, schedule, f"{schedule_file}\n{describe(schedule)}"))


class OTCacheScheduleSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheScheduleSave",
            display_name="OTCache Save Schedule",
            category=CATEGORY,
            description=(
                "Saves a caching schedule as JSON in ComfyUI's models/otcache_schedules folder, with its "
                "model, source and parameters, so OTCache Load Schedule can use it in any workflow. An "
                "existing file is kept unless overwrite is on. The node shows where the file was written."
            ),
            inputs=[
                OTSchedule.Input("schedule", tooltip="The schedule to save (from the Budget Slider, a search, a preset or text)."),
                io.String.Input("filename", default="otcache-schedule", tooltip=(
                    "File name in models/otcache_schedules; .json is added. Letters, digits, '-', '_', '.' and "
                    "spaces only, no folders.")),
                io.Boolean.Input("overwrite", default=False, tooltip=(
                    "Replace a file of the same name. Off: saving onto an existing file stops with an error.")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip="The same schedule, passed through so saving can sit inline.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, schedule, filename, overwrite=False) -> io.NodeOutput:
        if not isinstance(schedule, Schedule):
            raise ScheduleError(f"the schedule input must be an OTCache schedule; got {type(schedule).__name__}")
        path = write_schedule_file(schedule, filename, overwrite=bool(overwrite))
        log.info("OTCache: saved schedule %s to %s", schedule, path)
        return io.NodeOutput(schedule, ui=show(cls, schedule, f"saved {path}\n{describe(schedule)}"))
