"""Shipped schedules (presets), read from the pack's ``schedules/`` folder.

Layout of ``schedules/``: every ``*.json`` file is either

- a preset collection, one per model family and method, e.g. ``lemica-flux1-dev.json``::

      {"format": "otcache.presets", "version": 1,
       "model": "flux1-dev", "method": "LeMiCa", "attribution": "...",
       "presets": [{"name": "lemica-flux1-dev-50-26", "steps": 50, "budget": 26,
                    "schedule": {<an otcache.schedule object>}}, ...]}

  where each entry's ``steps`` and ``budget`` must match its schedule, or
- a single ``otcache.schedule`` object (see :mod:`.schedule`), whose preset name is
  the file name without ``.json`` -- so a saved schedule dropped into the folder
  becomes a preset.

The published LeMiCa schedules (arXiv 2511.00090, repository UnicomAI/LeMiCa) ship
as ``lemica-<model>.json``, named ``lemica-<model>-<steps>-<budget>``, with
``source="published"`` and the attribution in each schedule's ``params``.

Synthetic presets are recognised by name and not listed (there are infinitely many):
``uniform-<N>-<K>`` is :meth:`Schedule.uniform` and ``full-<N>`` is
:meth:`Schedule.full`.
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schedule import MAX_STEPS, Schedule, ScheduleError, as_step_count, clip

PRESETS_FORMAT = "otcache.presets"
PRESETS_VERSION = 1
SCHEDULES_DIR = Path(__file__).resolve().parent.parent / "schedules"


@dataclass(frozen=True)
class Preset:
    """One named shipped schedule."""

    name: str
    model: str
    steps: int
    budget: int
    schedule: Schedule
    attribution: str = ""
    file: str = ""  # the file it was read from, for error messages

    @property
    def speedup(self) -> float:
        return self.schedule.speedup


def _read_file(path: Path) -> list[Preset]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScheduleError(f"preset file {path.name} cannot be read: {error}") from None
    if not isinstance(data, Mapping):
        raise ScheduleError(f"preset file {path.name} must hold a JSON object")
    found = data.get("format")
    try:
        if found == "otcache.schedule":
            schedule = Schedule.from_json(data)
            return [Preset(path.stem, schedule.model, schedule.steps, schedule.budget, schedule, "", path.name)]
        if found != PRESETS_FORMAT:
            raise ScheduleError(f"format is {found!r}, expected {PRESETS_FORMAT!r} or 'otcache.schedule'")
        if data.get("version") != PRESETS_VERSION:
            raise ScheduleError(
                f"presets version {data.get('version')!r} is not supported; this OTCache reads version {PRESETS_VERSION}"
            )
        entries = data.get("presets")
        if not isinstance(entries, list):
            raise ScheduleError("'presets' must be a list")
        attribution = str(data.get("attribution", ""))
        return [_read_entry(entry, attribution, path.name) for entry in entries]
    except ScheduleError as error:
        raise ScheduleError(f"preset file {path.name}: {error}") from None


def _read_entry(entry: Any, attribution: str, file: str) -> Preset:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ScheduleError("every preset entry needs a string 'name'")
    name = entry["name"]
    schedule = Schedule.from_json(entry.get("schedule"))
    for key in ("steps", "budget"):
        if entry.get(key) != getattr(schedule, key):
            raise ScheduleError(
                f"preset {name}: '{key}' is {entry.get(key)!r} but its schedule has {getattr(schedule, key)}"
            )
    return Preset(name, schedule.model, schedule.steps, schedule.budget, schedule, attribution, file)


def _all_presets(directory: Path | None) -> dict[str, Preset]:
    folder = SCHEDULES_DIR if directory is None else Path(directory)
    presets: dict[str, Preset] = {}
    if not folder.is_dir():
        return presets
    for path in sorted(folder.glob("*.json")):
        for preset in _read_file(path):
            if preset.name in presets:
                raise ScheduleError(
                    f"preset name {preset.name} appears in both {presets[preset.name].file} and "
                    f"{preset.file}; rename one"
                )
            presets[preset.name] = preset
    return presets


def _sort_key(preset: Preset) -> tuple[str, int, int, str]:
    # By family, then steps, then most computed steps (safest) first.
    return (preset.model, preset.steps, -preset.budget, preset.name)


def model_families(*, directory: Path | None = None) -> list[str]:
    """The model families that have presets, sorted."""
    return sorted({p.model for p in _all_presets(directory).values() if p.model})


def list_presets(model: str | None = None, *, directory: Path | None = None) -> list[Preset]:
    """All presets, or those of one model family; sorted by family, steps, budget (high first).

    An unknown family raises :class:`ScheduleError` listing the known ones, so a typo
    does not look like "no presets".
    """
    presets = sorted(_all_presets(directory).values(), key=_sort_key)
    if model is None:
        return presets
    chosen = [p for p in presets if p.model == model]
    if not chosen:
        families = sorted({p.model for p in presets if p.model})
        raise ScheduleError(
            f"no presets for model family {model!r}; known families: {', '.join(families) or '(none)'}"
        )
    return chosen


def _synthetic(name: str) -> Schedule | None:
    """``uniform-<N>-<K>`` / ``full-<N>``; N and K are ASCII digits, checked against MAX_STEPS before use."""
    match = re.fullmatch(r"uniform-([0-9]+)-([0-9]+)", name) or re.fullmatch(r"full-([0-9]+)", name)
    if not match:
        return None
    numbers = [int(g) if len(g) <= len(str(MAX_STEPS)) + 1 else MAX_STEPS + 1
               for g in match.groups()]
    steps = as_step_count(numbers[0], f"the steps of preset {name[:40]!r}")
    if len(numbers) == 2:
        return Schedule.uniform(steps, numbers[1])
    return Schedule.full(steps)


def load_preset(name: str, *, directory: Path | None = None) -> Schedule:
    """The schedule of a preset by name (``lemica-flux1-dev-50-26``, ``uniform-50-10``, ``full-50``).

    An unknown name raises :class:`ScheduleError` listing the closest names.
    """
    if not isinstance(name, str):
        raise ScheduleError(f"a preset name must be a string; got {type(name).__name__}")
    if len(name) > 200:
        raise ScheduleError(f"a preset name is at most 200 characters; got {len(name)}")
    key = name.strip()
    synthetic = _synthetic(key)
    if synthetic is not None:
        return synthetic
    presets = _all_presets(directory)
    if key in presets:
        return presets[key].schedule
    close = difflib.get_close_matches(key, list(presets), n=5, cutoff=0.5)
    examples = ", ".join(sorted(presets)[:3]) + (f" and {len(presets) - 3} more" if len(presets) > 3 else "")
    hint = f"did you mean {', '.join(close)}?" if close else f"known presets: {examples or '(none)'}"
    raise ScheduleError(
        f"unknown preset {clip(name)}; {hint} (also uniform-<steps>-<budget> and full-<steps>)"
    )
