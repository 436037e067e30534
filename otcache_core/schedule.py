"""Caching schedules: which of a sampler's N steps run the transformer.

A schedule for ``N`` steps (indices ``0..N-1``) is the sorted tuple ``compute`` of the
step indices on which the transformer really runs; on every other step a cached value
is reused. Its budget is ``K = len(compute)`` and its ideal speedup ``N / K``.
Step 0 and step N-1 are always computed (every published schedule does this), so
``2 <= K <= N``.

:class:`Schedule` is an immutable value object. Two schedules are ``==`` (and hash
alike) when their ``steps`` and ``compute`` agree: the metadata (model family,
sampler, scheduler, source, params, metrics) describes where a schedule came from,
not what it does, so a published schedule and the same list typed in by hand are the
same schedule. Use :meth:`Schedule.to_dict` to compare metadata as well.

Text forms
----------
- compact: ``"50:0,1,2,3,5,8,49"``, i.e. ``N:s0,s1,...``, short enough for a widget and
  a workflow JSON. :meth:`Schedule.parse` also accepts whitespace anywhere between
  tokens and inclusive ranges ``a-b`` (``"50:0-10,15,49"``); ``str(schedule)`` writes
  the plain list.
- JSON: ``{"format": "otcache.schedule", "version": 1, "steps": ..., "compute": [...],
  "model": ..., "sampler": ..., "scheduler": ..., "source": ..., "params": {...},
  "metrics": {...}}``.

Every invalid input raises :class:`ScheduleError` (a ``ValueError``) whose message
names the problem and how to fix it, quotes at most a short piece of the input, and is
raised before anything is expanded: one limit on the step count (:data:`MAX_STEPS`)
and one on the text length (:data:`MAX_TEXT_CHARS`) hold for every way in (typed
text, files, presets, the preview routes). Only ASCII digits are numbers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "otcache.schedule"
FORMAT_VERSION = 1

SOURCES: tuple[str, ...] = (
    "reference",  # stage 1: a graph-searched schedule at a conservative budget
    "anchor",  # stage 2: a searched schedule at an extreme budget
    "interpolated",  # stage 3: predicted between reference and anchor
    "published",  # shipped with a paper (e.g. LeMiCa)
    "uniform",  # evenly spread computed steps
    "full",  # every step computed
    "custom",  # anything else (typed in, hand made)
)

METADATA_FIELDS: tuple[str, ...] = ("model", "sampler", "scheduler", "source", "params", "metrics")

MAX_STEPS = 10_000  # sampling step count N: the one limit on every schedule, however it is made
MAX_TEXT_CHARS = 1_000_000  # schedule text or JSON; a full 10,000-step list is about 50,000 characters
MAX_JSON_DEPTH = 32  # nesting of params / metrics
_MAX_DIGITS = len(str(MAX_STEPS)) + 1  # longer numbers are refused before int() sees them
_NUMBER = rf"[0-9]{{1,{_MAX_DIGITS}}}"

COMPACT_FORM_HINT = 'expected "N:s0,s1,...", e.g. "50:0,1,2,5,10,20,49" (ranges like "0-10" are allowed)'

# Targets within this distance of a .5 tie count as ties (and round up), so float
# noise in p_k = Q(u_k) * (N - 1) never decides a rounding.
_TIE_TOLERANCE = 1e-9


class ScheduleError(ValueError):
    """An invalid schedule input; the message names the problem and the fix."""


def clip(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters, for quoting user input in an error."""
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # never repr a megabyte to keep 60 characters of it
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(str(value))} characters)"


# ----------------------------------------------------------------- frozen JSON values


class FrozenMapping(Mapping):
    """A read-only, hashable, picklable mapping holding frozen JSON values.

    ``Schedule.params`` and ``Schedule.metrics`` are stored this way so a schedule
    stays immutable all the way down: nested dicts become ``FrozenMapping`` and
    lists become tuples. It compares equal to a plain ``dict`` with the same items.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMapping is read-only")

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMapping, (self._data,))


def freeze_json(value: Any, where: str, depth: int = 0) -> Any:
    """Return an immutable copy of a JSON-serializable value, or raise ScheduleError.

    Allowed: ``None``, ``bool``, integers, finite floats, strings, lists/tuples and
    mappings with string keys (recursively). Numpy scalars are converted to Python
    numbers. ``where`` names the value in error messages (e.g. ``"params['lambda']"``).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if depth > MAX_JSON_DEPTH:
        raise ScheduleError(f"{where[:80]} is nested more than {MAX_JSON_DEPTH} levels deep; flatten it")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ScheduleError(f"{where} is {number}, which JSON cannot hold; use a finite number or null")
        return number
    if isinstance(value, Mapping):
        frozen = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ScheduleError(f"{where} has key {clip(key)} of type {type(key).__name__}; JSON keys must be strings")
            frozen[key] = freeze_json(item, f"{where}[{clip(key, 30)}]", depth + 1)
        return FrozenMapping(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    if isinstance(value, np.ndarray):
        return freeze_json(value.tolist(), where, depth)
    raise ScheduleError(
        f"{where} is a {type(value).__name__}, which is not JSON-serializable; "
        "use numbers, strings, booleans, null, lists or dicts"
    )


def thaw_json(value: Any) -> Any:
    """Inverse of :func:`freeze_json`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: thaw_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw_json(item) for item in value]
    return value


# ----------------------------------------------------------------- integer checks


def as_step_count(value: Any, what: str = "steps") -> int:
    """Return ``value`` as an int in ``[2, MAX_STEPS]`` (a schedule needs a first and a last step)."""
    n = as_integer(value, what)
    if n < 2:
        raise ScheduleError(
            f"{what} must be at least 2 (a schedule computes a first and a last step); got {n}"
        )
    if n > MAX_STEPS:
        raise ScheduleError(f"{what} is {clip(n, 30)}; schedules have at most {MAX_STEPS} steps")
    return n


def as_integer(value: Any, what: str, low: int | None = None, error: type[Exception] = None, hint: str = "") -> int:
    """``value`` as an int, at least ``low`` if given: the project's one integer check.

    Integral floats are accepted; bools, other numbers and other types raise ``error``
    (default :class:`ScheduleError`) naming ``what``; ``hint`` follows the lower bound.
    """
    error = error or ScheduleError
    if type(value) is int:  # the common case; skips the slower ABC checks below
        number = value
    elif isinstance(value, (bool, np.bool_)):
        raise error(f"{what} must be an integer; got the boolean {value!r}")
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        real = float(value)
        if not (math.isfinite(real) and real.is_integer()):
            raise error(f"{what} must be an integer; got {clip(value, 40)}")
        number = int(real)
    else:
        raise error(f"{what} must be an integer; got {type(value).__name__} {clip(value, 40)}")
    if low is not None and number < low:
        raise error(f"{what} must be at least {low}{hint}; got {number}")
    return number


# ----------------------------------------------------------------- discretization


def round_half_up(x: float) -> int:
    """Round to the nearest integer, ties (within float noise) toward +infinity."""
    return math.floor(x + 0.5 + _TIE_TOLERANCE)


def repair_steps(targets: Sequence[int], steps: int) -> tuple[int, ...]:
    """Turn K integer targets into K distinct increasing steps with 0 and N-1 included.

    ``s_0 = 0`` and ``s_{K-1} = N-1`` are fixed; a forward pass
    ``s_k = max(t_k, s_{k-1} + 1)`` removes collisions and a backward pass
    ``s_k = min(s_k, s_{k+1} - 1)`` pulls back whatever the forward pass pushed past the
    end. Targets that are already distinct, increasing and in range are kept unchanged.
    Requires ``2 <= K <= N``: then the forward pass gives ``s_k >= k`` and the backward
    pass keeps ``s_k >= k``, so the result is valid.
    """
    n = as_step_count(steps)
    k_total = len(targets)
    if not 2 <= k_total <= n:
        raise ScheduleError(
            f"cannot place {k_total} computed steps in {n} steps; the budget must be in [2, {n}]"
        )
    clipped = [min(max(int(t), 0), n - 1) for t in targets]
    result = [0] * k_total
    for k in range(1, k_total - 1):
        result[k] = max(clipped[k], result[k - 1] + 1)
    result[-1] = n - 1
    for k in range(k_total - 2, 0, -1):
        result[k] = min(result[k], result[k + 1] - 1)
    return tuple(result)


# ----------------------------------------------------------------- schedule


def _check_compute(compute: tuple[int, ...], steps: int) -> None:
    last = steps - 1
    if len(compute) > steps:
        raise ScheduleError(
            f"{len(compute)} computed steps listed for only {steps} steps; the budget can be at most {steps}"
        )
    for step in compute:
        if not 0 <= step <= last:
            raise ScheduleError(f"step {step} is out of range for {steps} steps (valid 0..{last})")
    seen: set[int] = set()
    for step in compute:
        if step in seen:
            raise ScheduleError(f"step {step} is listed twice; list each computed step once")
        seen.add(step)
    for before, after in zip(compute, compute[1:]):
        if after < before:
            raise ScheduleError(
                f"compute steps must be sorted ascending; got {after} after {before} (sort the list)"
            )
    if not compute or compute[0] != 0:
        raise ScheduleError("a schedule must compute step 0 (the first step); add 0 to the list")
    if compute[-1] != last:
        raise ScheduleError(
            f"a schedule must compute step {last} (the last of {steps} steps); add {last} to the list"
        )


@dataclass(frozen=True, eq=False, repr=False)
class Schedule:
    """An immutable caching schedule: ``compute`` steps out of ``steps``, plus metadata.

    ``steps`` is N; ``compute`` the sorted distinct step indices on which the
    transformer runs, always including 0 and N-1 (so K >= 2). Lists and numpy arrays
    are accepted and stored as a tuple of ints. ``params`` (how it was made) and
    ``metrics`` (what was measured) must be JSON-serializable; they are stored
    frozen (:class:`FrozenMapping`).

    Equality and hashing use ``(steps, compute)`` only; see the module docstring.
    """

    steps: int
    compute: tuple[int, ...]
    model: str = ""
    sampler: str = ""
    scheduler: str = ""
    source: str = "custom"
    params: Mapping[str, Any] = field(default_factory=FrozenMapping)
    metrics: Mapping[str, Any] = field(default_factory=FrozenMapping)

    def __post_init__(self) -> None:
        steps = as_step_count(self.steps)
        if isinstance(self.compute, (str, bytes)) or not isinstance(self.compute, Iterable):
            raise ScheduleError(
                f"compute must be a list of step indices; got {type(self.compute).__name__} "
                "(use Schedule.parse for text)"
            )
        if hasattr(self.compute, "__len__") and len(self.compute) > steps:
            raise ScheduleError(
                f"{len(self.compute)} computed steps listed for only {steps} steps; the budget can be at most {steps}"
            )
        compute = tuple(as_integer(step, f"compute step {clip(step, 30)}") for step in self.compute)
        _check_compute(compute, steps)
        for name in ("model", "sampler", "scheduler"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ScheduleError(f"{name} must be a string; got {type(value).__name__} {clip(value, 40)}")
        if self.source not in SOURCES:
            raise ScheduleError(f"source must be one of {', '.join(SOURCES)}; got {clip(self.source, 40)}")
        for name in ("params", "metrics"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ScheduleError(f"{name} must be a dict; got {type(value).__name__}")
            object.__setattr__(self, name, freeze_json(value, name))
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "compute", compute)

    # ------------------------------------------------------------- identity

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.steps == other.steps and self.compute == other.compute

    def __hash__(self) -> int:
        return hash((self.steps, self.compute))

    def __len__(self) -> int:
        """The budget K, so ``len(schedule)`` reads as "number of computed steps"."""
        return len(self.compute)

    def __str__(self) -> str:
        return f"{self.steps}:" + ",".join(str(step) for step in self.compute)

    def __repr__(self) -> str:
        extras = [
            f"{name}={getattr(self, name)!r}"
            for name in ("model", "sampler", "scheduler")
            if getattr(self, name)
        ]
        if self.source != "custom":
            extras.append(f"source={self.source!r}")
        return f"Schedule.parse({str(self)!r}{''.join(', ' + e for e in extras)})"

    # ------------------------------------------------------------- derived facts

    @property
    def budget(self) -> int:
        """K, the number of computed steps."""
        return len(self.compute)

    @property
    def speedup(self) -> float:
        """Ideal speedup N / K of the transformer calls."""
        return self.steps / len(self.compute)

    @property
    def skipped(self) -> tuple[int, ...]:
        """The steps that reuse the cache, ascending."""
        computed = set(self.compute)
        return tuple(step for step in range(self.steps) if step not in computed)

    @property
    def mask(self) -> tuple[bool, ...]:
        """``mask[i]`` is True when step i is computed; length N."""
        computed = set(self.compute)
        return tuple(step in computed for step in range(self.steps))

    @property
    def is_full(self) -> bool:
        """True when every step is computed (K == N)."""
        return len(self.compute) == self.steps

    # ------------------------------------------------------------- constructors

    @classmethod
    def full(cls, steps: int, **metadata: Any) -> Schedule:
        """Every step computed."""
        n = as_step_count(steps)
        metadata.setdefault("source", "full")
        return cls(n, tuple(range(n)), **metadata)

    @classmethod
    def uniform(cls, steps: int, budget: int, **metadata: Any) -> Schedule:
        """K computed steps spread evenly: ``s_k = round(k (N-1) / (K-1))``, ties up.

        Exact integer arithmetic, so no float decides a tie. With ``K <= N`` the spacing
        ``(N-1)/(K-1)`` is at least 1 and the rounded steps are already distinct; the
        repair of :func:`repair_steps` is applied anyway as the common last step.
        """
        n = as_step_count(steps)
        k_total = as_integer(budget, "budget")
        if not 2 <= k_total <= n:
            raise ScheduleError(f"budget {k_total} is out of range for {n} steps (valid 2..{n})")
        # floor(k (N-1)/(K-1) + 1/2) in integers
        targets = [(2 * k * (n - 1) + (k_total - 1)) // (2 * (k_total - 1)) for k in range(k_total)]
        metadata.setdefault("source", "uniform")
        return cls(n, repair_steps(targets, n), **metadata)

    def with_metadata(self, **changes: Any) -> Schedule:
        """A copy with some metadata fields replaced (``dataclasses.replace``).

        Only ``model``, ``sampler``, ``scheduler``, ``source``, ``params`` and ``metrics``
        may change (``params``/``metrics`` are replaced whole, not merged); a schedule
        with other steps is a different schedule, so build a new one for that.
        """
        unknown = sorted(set(changes) - set(METADATA_FIELDS))
        if unknown:
            raise ScheduleError(
                f"with_metadata cannot change {', '.join(unknown)}; "
                f"metadata fields are {', '.join(METADATA_FIELDS)}"
            )
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------- compact text

    @classmethod
    def parse(cls, text: str, **metadata: Any) -> Schedule:
        """Read the compact form ``"N:s0,s1,..."`` (or a JSON object, see :meth:`from_json`).

        Whitespace between tokens is ignored; an entry ``a-b`` stands for the steps
        ``a, a+1, ..., b``. Malformed text raises :class:`ScheduleError` naming the
        problem and showing the expected form. Metadata keywords apply to the result
        (for JSON text they override the stored fields).
        """
        if not isinstance(text, str):
            raise ScheduleError(f"schedule text must be a string; got {type(text).__name__}. {COMPACT_FORM_HINT}")
        if len(text) > MAX_TEXT_CHARS:
            raise ScheduleError(f"schedule text is {len(text)} characters long; at most {MAX_TEXT_CHARS}")
        stripped = text.strip()
        if stripped.startswith("{"):
            schedule = cls.from_json(stripped)
            return schedule.with_metadata(**metadata) if metadata else schedule
        if not stripped:
            raise ScheduleError(f"schedule text is empty; {COMPACT_FORM_HINT}")
        head, colon, body = stripped.partition(":")
        if not colon:
            raise ScheduleError(f"schedule text {clip(text)} has no ':' after the step count; {COMPACT_FORM_HINT}")
        head = head.strip()
        if re.fullmatch(r"[0-9]+", head) and len(head) > _MAX_DIGITS:
            raise ScheduleError(f"step count {clip(head, 30)} is too large; schedules have at most {MAX_STEPS} steps")
        if not re.fullmatch(_NUMBER, head):
            raise ScheduleError(f"step count {clip(head, 30)} is not a whole number; {COMPACT_FORM_HINT}, digits 0-9 only")
        steps = as_step_count(int(head))
        compute: list[int] = []
        for position, entry in enumerate(body.split(","), start=1):
            compute.extend(_parse_entry(entry.strip(), position, steps))
            if len(compute) > steps:  # bounded before anything else is expanded
                raise ScheduleError(f"more than {steps} computed steps listed for {steps} steps; list each step once")
        return cls(steps, compute, **metadata)

    # ------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (plain dicts and lists) of format ``otcache.schedule`` v1."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "steps": self.steps,
            "compute": list(self.compute),
            "model": self.model,
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "source": self.source,
            "params": thaw_json(self.params),
            "metrics": thaw_json(self.metrics),
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text (strict JSON: no NaN or infinity)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Schedule:
        """Read a schedule from JSON text or an already decoded dict.

        ``format`` must be ``"otcache.schedule"`` and ``version`` 1; ``steps`` and
        ``compute`` are required, the metadata fields optional; unknown keys are
        rejected (they are usually typos).
        """
        if isinstance(data, (str, bytes, bytearray)):
            if len(data) > MAX_TEXT_CHARS:
                raise ScheduleError(f"schedule JSON is {len(data)} characters long; at most {MAX_TEXT_CHARS}")
            try:
                data = json.loads(data)
            except json.JSONDecodeError as error:
                raise ScheduleError(
                    f"schedule JSON is not valid JSON ({error.msg} at line {error.lineno}, "
                    f"column {error.colno})"
                ) from None
            except RecursionError:
                raise ScheduleError("schedule JSON is nested too deeply to read; a schedule is a flat object") from None
            except ValueError as error:  # e.g. an integer of thousands of digits
                raise ScheduleError(f"schedule JSON holds a value that cannot be read ({clip(str(error), 80)})") from None
        if not isinstance(data, Mapping):
            raise ScheduleError(
                f"schedule JSON must be an object with format {FORMAT!r}; got {type(data).__name__}"
            )
        found_format = data.get("format")
        if found_format != FORMAT:
            raise ScheduleError(
                f"not an OTCache schedule: format is {clip(found_format, 40)}, expected {FORMAT!r}"
            )
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ScheduleError(
                f"schedule JSON version must be the integer {FORMAT_VERSION}; got {clip(version, 30)}"
            )
        if version != FORMAT_VERSION:
            newer = " (written by a newer ComfyUI-OTCache; update the pack)" if version > FORMAT_VERSION else ""
            raise ScheduleError(
                f"schedule format version {version} is not supported; this OTCache reads version "
                f"{FORMAT_VERSION}{newer}"
            )
        known = {f.name for f in dataclasses.fields(cls)} | {"format", "version"}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            shown = ", ".join(key[:30] for key in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ScheduleError(f"unknown key(s) in schedule JSON: {shown}; known keys: {', '.join(sorted(known))}")
        missing = [key for key in ("steps", "compute") if key not in data]
        if missing:
            raise ScheduleError(f"schedule JSON lacks {' and '.join(missing)}")
        compute = data["compute"]
        if not isinstance(compute, (list, tuple)):
            raise ScheduleError(f"'compute' must be a list of step indices; got {type(compute).__name__}")
        fields = {key: value for key, value in data.items() if key not in ("format", "version")}
        return cls(**fields)


def _parse_entry(entry: str, position: int, steps: int) -> list[int]:
    """One comma-separated entry of the compact form: ``7`` or ``3-9`` (checked against N before expanding)."""
    if not entry:
        raise ScheduleError(f"entry {position} of the step list is empty (two commas in a row?); {COMPACT_FORM_HINT}")
    match = re.fullmatch(rf"({_NUMBER})(?:\s*-\s*({_NUMBER}))?", entry)
    if not match:
        raise ScheduleError(
            f"entry {position} of the step list, {clip(entry, 40)}, is not a step number or a range a-b "
            f"(steps are whole numbers >= 0 in ASCII digits); {COMPACT_FORM_HINT}"
        )
    first = int(match.group(1))
    last = first if match.group(2) is None else int(match.group(2))
    if last < first:
        raise ScheduleError(f"range {clip(entry, 40)} runs backwards; write it as {last}-{first}")
    if last > steps - 1:
        raise ScheduleError(f"step {last} is out of range for {steps} steps (valid 0..{steps - 1})")
    return list(range(first, last + 1))
