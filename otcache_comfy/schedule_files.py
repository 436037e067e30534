"""The ``models/otcache_schedules`` folder: registering it, listing, safe names, atomic saving, reading."""
from __future__ import annotations

import hashlib
import logging
import os
import re

import folder_paths

from ..otcache_core.atomic import write_atomic
from ..otcache_core.schedule import MAX_TEXT_CHARS, Schedule, ScheduleError, clip

log = logging.getLogger("otcache")

SCHEDULES_FOLDER = "otcache_schedules"
SCHEDULE_EXTENSION = ".json"
_MAX_FILENAME = 200
_MAX_FILENAME_BYTES = 255
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_registered = False


def ensure_schedule_folder() -> None:
    """Register the folder once (at first use, not at import: importing has no side effect)."""
    global _registered
    if not _registered:
        register_schedule_folder()
        _registered = True


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



def schedule_folders() -> list[str]:
    """The otcache_schedules folders, the first being where schedules are saved."""
    ensure_schedule_folder()
    return folder_paths.get_folder_paths(SCHEDULES_FOLDER)


def schedule_files() -> list[str]:
    """The schedule files (relative names) in all otcache_schedules folders, sorted."""
    ensure_schedule_folder()
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
    ensure_schedule_folder()
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


def schedule_file_fingerprint(name: str) -> str:
    """The content hash of schedule file ``name``, so editing the file makes the Load node run again."""
    ensure_schedule_folder()
    path = folder_paths.get_full_path(SCHEDULES_FOLDER, name) if name else None
    if path is None:
        return f"missing:{name}"
    try:
        with open(path, "rb") as stream:
            return hashlib.sha256(stream.read()).hexdigest()
    except OSError:
        return f"unreadable:{name}"
