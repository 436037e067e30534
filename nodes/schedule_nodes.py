"""OTCache schedule nodes: make, pick, type in, load and save caching schedules.

- OTCache Budget Slider: a speedup between full compute and the anchor -> the
  schedule on the measured budget path, or the OT-interpolated one (:mod:`..otcache_comfy.slider`; docs/design.md section 5).
- OTCache Schedule Preset / Schedule (Text) / Load Schedule / Save Schedule: one
  node per way a schedule enters or leaves a graph.

Every node that produces a schedule shows it on the node: a text summary (``ui.text``,
also sent as progress text when a server runs, since the frontend does not draw
``ui.text`` on its own) and the schedule's JSON object under ``ui["otcache_schedule"]``
for a frontend extension that draws a strip. The nodes work when called directly from
Python (``cls.hidden`` is None and no PromptServer runs).
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..otcache_comfy.schedule_files import (  # noqa: F401  (re-exported: saved scripts import them from here)
    SCHEDULES_FOLDER,
    read_schedule_file,
    safe_schedule_filename,
    schedule_file_fingerprint,
    schedule_files,
    schedule_folders,
    write_schedule_file,
)
from ..otcache_comfy.slider import describe, slider_schedule
from ..otcache_comfy.ui_text import node_ui
from ..otcache_core.experts import expert_budgets, split_for_experts
from ..otcache_core.interpolate import MAPPINGS
from ..otcache_core.presets import list_presets, load_preset
from ..otcache_core.schedule import COMPACT_FORM_HINT, Schedule, ScheduleError
from ..otcache_core.warp import resample
from .types import CATEGORY, OTSchedule

log = logging.getLogger("otcache")

MAX_SPEEDUP_WIDGET = 20.0  # the slider's range; the real maximum is the anchor's speedup
UNIFORM_PRESETS = ("uniform-50-25", "uniform-50-20", "uniform-50-15", "uniform-50-10")
DEFAULT_TEXT = "50:0-10,12,15,18,20,25,30,35,39,42,44-49"


def _with_text_hint(error: ScheduleError) -> ScheduleError:
    message = str(error)
    if COMPACT_FORM_HINT not in message:
        message = f"{message}; schedule text: {COMPACT_FORM_HINT}, or a schedule JSON object"
    return ScheduleError(message)


# ---------------------------------------------------------------- Budget Slider


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
        result = slider_schedule(reference, anchor, speedup, steps, mapping)
        curve = [result.curve] if result.curve is not None else []
        return io.NodeOutput(result.schedule, ui=node_ui(cls, result.schedule, result.text, otcache_curve=curve))


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
        return io.NodeOutput(schedule, ui=node_ui(cls, schedule, _preset_text(preset, schedule)))


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
        return io.NodeOutput(schedule, ui=node_ui(cls, schedule, describe(schedule)))


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
        return schedule_file_fingerprint(schedule_file)

    @classmethod
    def execute(cls, schedule_file) -> io.NodeOutput:
        schedule = read_schedule_file(schedule_file)
        return io.NodeOutput(schedule, ui=node_ui(cls, schedule, f"{schedule_file}\n{describe(schedule)}"))


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
        return io.NodeOutput(schedule, ui=node_ui(cls, schedule, f"saved {path}\n{describe(schedule)}"))


# ---------------------------------------------------------------- two experts (Wan 2.2)


class OTCacheExpertSplit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheExpertSplit",
            display_name="OTCache Split for Two Experts",
            category=CATEGORY,
            description=(
                "For models that sample in two passes with two experts, such as Wan 2.2 (high-noise model for "
                "steps 0..s-1, low-noise model for s..N-1, two KSamplerAdvanced). Connect the result to a Cached "
                "Model on each expert: each pass finds its own steps of the schedule from its sigmas, so the two "
                "passes together compute exactly K of N steps. The low-noise pass starts with an empty cache, so "
                "step s must be computed: if the schedule skips it, the nearest computed step moves there."
            ),
            inputs=[
                OTSchedule.Input("schedule", tooltip="The schedule for all N steps (a preset, a Budget Slider, text)."),
                io.Int.Input("switch_step", default=10, min=1, max=10000, tooltip=(
                    "The step where the low-noise expert takes over: the first KSamplerAdvanced's end_at_step "
                    "(and the second one's start_at_step).")),
                io.Int.Input("steps", default=0, min=0, max=10000, optional=True, tooltip=(
                    "Both KSamplerAdvanced's steps (the total N). 0 keeps the schedule's step count; another "
                    "value resamples the schedule to it first (same shape and speedup).")),
            ],
            outputs=[OTSchedule.Output(display_name="schedule", tooltip=(
                "The schedule with step switch_step computed, for both experts' Cached Models."))],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, schedule, switch_step, steps=0) -> io.NodeOutput:
        if not isinstance(schedule, Schedule):
            raise ScheduleError(f"the schedule input must be an OTCache schedule; got {type(schedule).__name__}")
        split = split_for_experts(resample(schedule, steps) if steps else schedule, switch_step)
        high, low = expert_budgets(split, switch_step)
        lines = [describe(split), f"high-noise expert, steps 0-{switch_step - 1}: {high} computed; "
                                  f"low-noise expert, steps {switch_step}-{split.steps - 1}: {low} computed"]
        if "moved_step" in split.params:
            lines.append("computed step {} moved to {}: the low-noise pass starts there".format(*split.params["moved_step"]))
        if "added_step" in split.params:
            lines.append(f"step {switch_step} added (K + 1): the schedule had no step to move there")
        return io.NodeOutput(split, ui=node_ui(cls, split, "\n".join(lines)))
