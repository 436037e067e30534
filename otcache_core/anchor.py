"""Anchor search (OTCache stage 2, docs/design.md section 4): the best schedule at an extreme budget.

The anchor is the cheap end of the interpolation (:mod:`.interpolate`): a schedule with
budget ``K_a`` well below the reference's ``K_r`` over the same N steps. It is found by
an Optuna study over monotone warps with few knots; ``objective(schedule) -> float``
(lower is better; in the node: LPIPS against the full-compute image, averaged over the
calibration seeds) is the expensive part, so the search avoids every repeated call.

Search space
------------
A trial draws M positive increments (``M = knots``), each log-uniform on
``[delta_min, 1]`` (``delta_min = 0.05``, :data:`INCREMENT_LOW`):

.. math::

    \\delta_1, \\dots, \\delta_M \\in [\\delta_{\\min}, 1], \\qquad
    Q\\Bigl(\\frac{j}{M}\\Bigr) = \\frac{\\sum_{i \\le j} \\delta_i}{\\sum_{i \\le M} \\delta_i},
    \\quad j = 0, \\dots, M,

and Q is linear between the knots ``u_j = j / M``. So ``Q(0) = 0``, ``Q(1) = 1`` and Q
increases strictly (every increment is positive); a small ``delta_j`` makes Q flat on
``[u_{j-1}, u_j]``, i.e. computed steps dense in that stretch of the trajectory. The
increments are normalised by their sum, so only their ratios matter (one redundant
dimension, harmless for TPE); the slope ratio between two segments is at most
``1 / delta_min = 20``, enough for the front-loaded schedules of extreme budgets (a
wider range made TPE slower to find known optima in our synthetic benchmarks). Equal
increments give the identity warp.

The trial's schedule is the discretisation :func:`.warp.schedule_from_warp`
``S(delta) = schedule_from_warp(Q_delta, K_a, N)``.

Seeds (never worse than the reference's warp or uniform)
--------------------------------------------------------
Before the sampler proposes anything, *seed trials* are enqueued. A seed trial is an
enqueued trial whose user attribute ``otcache_seed_schedule`` names the exact schedule
to evaluate; its params are that schedule's nearest description in the search space
(so TPE learns from it). In order:

1. ``"reference"``: ``schedule_from_warp(warp(R), K_a, N)``, the reference's full warp
   discretised at the anchor budget (R resampled to N first if needed), exactly;
2. ``"reference-knots"``: the reference's warp read at the M knots,
   ``delta_j \\propto Q_R(j/M) - Q_R((j-1)/M)`` scaled so the largest is 1 and clipped
   below at ``delta_min``: the point of the search space nearest the reference. Its
   schedule ``S(delta)`` is usually the same as 1 and then it is not enqueued;
3. ``"uniform"``: equal increments, whose schedule is :meth:`.Schedule.uniform`.

A seed is enqueued only when its schedule is neither measured (a COMPLETE trial holds
it) nor already waiting in the queue, so a resumed study never repeats them. Seed trials
always run, even when ``trials`` is smaller than their count, so the returned anchor's
objective is ``<=`` that of both ``schedule_from_warp(warp(R), K_a, N)`` and
``Schedule.uniform(N, K_a)`` unless ``should_stop`` ends the search before they ran.

Deduplication
-------------
Many increments give the same schedule (rounding to integer steps). Every COMPLETE
trial stores the compact form of its schedule in the user attribute
``otcache_schedule`` and whether the objective really ran in ``otcache_measured``. A
trial whose schedule is already known (in this process or, re-read from the storage,
measured by an earlier run or another worker) reuses the value without calling the
objective. The returned schedule's metrics count real calls (``objective_calls`` for
this call of :func:`search`, ``objective_calls_total`` for the study).

Storage, resume and stale trials
--------------------------------
``storage=None`` keeps the study in memory. A string is an Optuna storage URL
(``sqlite:///path.db``, ``postgresql://...``); the study is created with
``load_if_exists=True``, so calling :func:`search` again resumes it: it runs trials until
the study holds ``trials`` COMPLETE trials (none if it already does). Only COMPLETE
trials count. A trial whose objective raised is FAIL (the exception propagates, the
study is kept). A trial left RUNNING by a killed process is never counted, and if it
was a seed, the seed is enqueued again. Every trial records its owner (host, process id
and the process's start time, :func:`owner_token`). When a study resumes, a RUNNING
trial whose owner ran on this host and is gone is marked FAIL at once and re-queued
with its parameters (:func:`reclaim_dead_trials`). A RUNNING trial of another host may
be another worker's trial in progress; for those, URL storages are opened with Optuna's
heartbeat (:data:`HEARTBEAT_INTERVAL_S`, :data:`HEARTBEAT_GRACE_S`), so the trial is
marked FAIL once its heartbeat is older than the grace period, and re-queued once.

The study's user attributes record steps, budget and knots; resuming a study made for
other values raises :class:`AnchorSearchError` (pick another study name, e.g. from
:func:`study_name_for`). The sampler is Optuna's multivariate TPE with a fixed seed;
until the study holds :data:`N_STARTUP_TRIALS` trials (seeds included) it samples at
random. The same inputs in memory give the same trials; a resumed run starts a fresh
sampler with the same seed, so its proposals can differ from those of an uninterrupted
run.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from .schedule import Schedule, ScheduleError, as_integer, as_step_count
from .warp import Warp, resample, schedule_from_warp, warp

INCREMENT_LOW = 0.05
INCREMENT_HIGH = 1.0
PARAM_PREFIX = "increment_"
DEFAULT_KNOTS = 5
DEFAULT_TRIALS = 30
# Random trials (the seed trials included) before TPE models the results. Multivariate TPE
# with few startup trials found known optima most often in the synthetic benchmarks.
N_STARTUP_TRIALS = 5
STUDY_PREFIX = "otcache-anchor-"

HEARTBEAT_INTERVAL_S = 20
HEARTBEAT_GRACE_S = 120

ATTR_SCHEDULE = "otcache_schedule"  # compact schedule a COMPLETE trial evaluated
ATTR_MEASURED = "otcache_measured"  # True: the objective ran; False: value reused
ATTR_SEED = "otcache_seed"  # seed label of an enqueued seed trial
ATTR_SEED_SCHEDULE = "otcache_seed_schedule"  # compact schedule a seed trial evaluates
ATTR_OWNER = "otcache_owner"  # who runs the trial: {"host", "pid", "start"}
ATTR_RETRY_OF = "otcache_retry_of"  # number of the dead trial a re-queued trial replaces

STUDY_FORMAT = "otcache.anchor-study"
STUDY_VERSION = 1

Objective = Callable[[Schedule], float]
OnTrial = Callable[[int, Schedule, float, Schedule, float], None]


class AnchorSearchError(ScheduleError):
    """An invalid anchor-search input or an incompatible stored study."""


# ----------------------------------------------------------------- helpers


def study_name_for(**fields: Any) -> str:
    """A stable study name: ``"otcache-anchor-"`` + sha256 (32 hex) of the fields' canonical JSON.

    Pass everything that changes the objective (model, conditioning, latent shape,
    sampler, scheduler, steps, cfg, calibration seeds, budget, ... as strings, numbers or
    digests): equal fields give the same name whatever the keyword order, so the study
    resumes; any difference gives another study.
    """
    if not fields:
        raise AnchorSearchError("study_name_for needs at least one field (e.g. model=..., budget=...)")
    try:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise AnchorSearchError(
            f"study_name_for fields must be JSON values (strings, numbers, lists, dicts): {error}"
        ) from None
    return STUDY_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def param_names(knots: int) -> list[str]:
    """``increment_1`` ... ``increment_M``."""
    return [f"{PARAM_PREFIX}{j}" for j in range(1, knots + 1)]


def warp_from_increments(increments: Sequence[float]) -> Warp:
    """The warp with knots ``(j/M, sum_{i<=j} delta_i / sum delta)`` (module docstring)."""
    d = np.asarray(increments, dtype=float)
    if d.ndim != 1 or d.size < 1 or not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise AnchorSearchError(f"warp increments must be at least one positive finite number; got {increments!r}")
    m = d.size
    q = np.cumsum(d) / d.sum()
    q[-1] = 1.0
    u = np.arange(m + 1, dtype=float) / m
    return Warp(tuple(u), (0.0, *np.maximum.accumulate(np.minimum(q, 1.0))))


def increments_from_warp(q: Warp, knots: int) -> list[float]:
    """The warp read at ``u_j = j/M`` as increments, scaled to max 1 and clipped to the search range."""
    u = np.arange(knots + 1, dtype=float) / knots
    d = np.diff(np.asarray(q(u), dtype=float))
    top = float(d.max())
    if top <= 0:  # cannot happen for a warp from 0 to 1; keep uniform as a safe answer
        return [INCREMENT_HIGH] * knots
    return [float(x) for x in np.clip(d / top, INCREMENT_LOW, INCREMENT_HIGH)]


def schedule_from_increments(increments: Sequence[float], budget: int, steps: int, **metadata: Any) -> Schedule:
    """``S(delta)``: the schedule a trial with these increments evaluates."""
    return schedule_from_warp(warp_from_increments(increments), budget, steps, **metadata)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


# ----------------------------------------------------------------- validation


def _validate(objective, steps, budget, reference, trials, seed, storage, study_name, knots, on_trial, should_stop):
    if not callable(objective):
        raise AnchorSearchError(f"objective must be callable (schedule -> float); got {type(objective).__name__}")
    n = as_step_count(steps)
    k = as_integer(budget, "anchor budget")
    if k < 2:
        raise AnchorSearchError(f"anchor budget must be at least 2 (steps 0 and {n - 1} are always computed); got {k}")
    if k > n:
        raise AnchorSearchError(f"anchor budget {k} is larger than the {n} steps; use a budget in [2, {n}]")
    if reference is not None:
        if isinstance(reference, str):
            reference = Schedule.parse(reference)
        if not isinstance(reference, Schedule):
            raise AnchorSearchError(f"reference must be a Schedule, compact text or None; got {type(reference).__name__}")
        reference = resample(reference, n)
        if reference.budget <= k:
            raise AnchorSearchError(
                f"reference budget {reference.budget} (at {n} steps) must be larger than the anchor budget {k}: "
                "the anchor is the extreme, cheaper end of the interpolation; lower the anchor budget "
                "or use a reference with more computed steps"
            )
    t = as_integer(trials, "trials", low=1, error=AnchorSearchError)
    m = as_integer(knots, "knots", low=1, error=AnchorSearchError, hint=" (the number of warp segments)")
    s = as_integer(seed, "seed")
    if study_name is not None and (not isinstance(study_name, str) or not study_name.strip()):
        raise AnchorSearchError(f"study_name must be a non-empty string or None; got {study_name!r}")
    if storage is not None and not isinstance(storage, (str, optuna.storages.BaseStorage)):
        raise AnchorSearchError(
            f"storage must be None (in memory), an Optuna storage URL such as 'sqlite:///anchor.db', "
            f"or an Optuna storage; got {type(storage).__name__}"
        )
    if isinstance(storage, str) and not storage.strip():
        raise AnchorSearchError("storage URL is empty; use None for an in-memory study or e.g. 'sqlite:///anchor.db'")
    if storage is not None and study_name is None:
        raise AnchorSearchError(
            "a stored study needs a study_name to be resumed; pass e.g. study_name_for(model=..., budget=...)"
        )
    for name, fn in (("on_trial", on_trial), ("should_stop", should_stop)):
        if fn is not None and not callable(fn):
            raise AnchorSearchError(f"{name} must be callable or None; got {type(fn).__name__}")
    return n, k, reference, t, m, s


STORAGE_OPEN_ATTEMPTS = 5


def _open_storage(storage):
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if "://" in storage:
        # Workers that open a fresh database at the same moment race to create Optuna's
        # tables (PostgreSQL: duplicate type/table errors); the loser simply retries.
        for attempt in range(STORAGE_OPEN_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        storage, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                    )
            except Exception as error:  # sqlalchemy IntegrityError / ProgrammingError on the race
                if attempt + 1 == STORAGE_OPEN_ATTEMPTS or "already exists" not in str(error):
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AnchorSearchError(f"storage {storage!r} is not a storage URL; use e.g. 'sqlite:///path/anchor.db'")


# ----------------------------------------------------------------- dead trials


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (Linux /proc; "" elsewhere), so a reused pid is not taken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def owner_token() -> dict[str, Any]:
    """Who runs a trial: this host, this process and when it started."""
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def owner_is_dead(owner: Any) -> bool:
    import os
    import socket

    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another machine's trial: its heartbeat decides
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return bool(owner.get("start")) and _process_start(pid) != owner.get("start")


def reclaim_dead_trials(study: optuna.Study) -> int:
    """Fail every RUNNING trial whose owner on this host is gone, and re-queue it; the number re-queued."""
    reclaimed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owner_is_dead(trial.user_attrs.get(ATTR_OWNER)):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # finished or failed by another worker meanwhile
            continue
        keep = {k: v for k, v in trial.user_attrs.items() if k in (ATTR_SEED, ATTR_SEED_SCHEDULE)}
        study.enqueue_trial(dict(trial.params), user_attrs={**keep, ATTR_RETRY_OF: trial.number},
                            skip_if_exists=False)
        reclaimed += 1
    return reclaimed


# ----------------------------------------------------------------- search


def _measured_from(study: optuna.Study) -> dict[str, float]:
    measured: dict[str, float] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = trial.user_attrs.get(ATTR_SCHEDULE)
        if key is not None and trial.value is not None:
            measured.setdefault(key, float(trial.value))
    return measured


def _best(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial | None, int, int]:
    """Best COMPLETE trial (lowest value, then lowest number), complete count, real-call count."""
    best = None
    complete = 0
    calls = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if ATTR_SCHEDULE not in trial.user_attrs:
            continue
        complete += 1
        calls += bool(trial.user_attrs.get(ATTR_MEASURED))
        if best is None or (trial.value, trial.number) < (best.value, best.number):
            best = trial
    return best, complete, calls


def _seed_trials(reference: Schedule | None, budget: int, steps: int, knots: int,
                 extra: Sequence[tuple[str, Schedule]] = ()) -> list[tuple[str, Schedule, list[float]]]:
    """(label, exact schedule, params) of the seeds, in order, without repeated schedules."""
    seeds: list[tuple[str, Schedule, list[float]]] = []
    for label, schedule in extra:  # e.g. the graph search's own solution at this budget
        if schedule.steps == steps and schedule.budget == budget:
            seeds.append((label, schedule, increments_from_warp(warp(schedule), knots)))
    if reference is not None:
        ref_warp = warp(reference)
        ref_params = increments_from_warp(ref_warp, knots)
        seeds.append(("reference", schedule_from_warp(ref_warp, budget, steps), ref_params))
        seeds.append(("reference-knots", schedule_from_increments(ref_params, budget, steps), ref_params))
    seeds.append(("uniform", Schedule.uniform(steps, budget), [INCREMENT_HIGH] * knots))
    unique: list[tuple[str, Schedule, list[float]]] = []
    for label, schedule, params in seeds:
        if all(schedule != other for _, other, _ in unique):
            unique.append((label, schedule, params))
    return unique


def _check_study(study: optuna.Study, steps: int, budget: int, knots: int, seed: int, reference) -> None:
    expected = {"steps": steps, "budget": budget, "knots": knots}
    attrs = study.user_attrs
    if attrs.get("format") is None:
        study.set_user_attr("format", STUDY_FORMAT)
        study.set_user_attr("version", STUDY_VERSION)
        for key, value in expected.items():
            study.set_user_attr(key, value)
        study.set_user_attr("seed", seed)
        study.set_user_attr("reference", None if reference is None else str(reference))
        return
    if attrs.get("format") != STUDY_FORMAT:
        raise AnchorSearchError(
            f"study {study.study_name!r} is not an OTCache anchor study (format {attrs.get('format')!r}); "
            "use another study name"
        )
    found = {key: attrs.get(key) for key in expected}
    if found != expected:
        raise AnchorSearchError(
            f"study {study.study_name!r} was made for "
            + ", ".join(f"{k}={v}" for k, v in found.items())
            + " but this search has "
            + ", ".join(f"{k}={v}" for k, v in expected.items())
            + "; use another study name (study_name_for(...) of the new settings) or delete the study"
        )


def search(
    objective: Objective,
    steps: int,
    budget: int,
    reference: Schedule | str | None = None,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    knots: int = DEFAULT_KNOTS,
    on_trial: OnTrial | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra_seeds: Sequence[tuple[str, Schedule]] = (),
) -> tuple[Schedule, optuna.Study]:
    """Search the anchor schedule of ``budget`` computed steps out of ``steps``.

    ``objective(schedule) -> float`` (finite, lower is better) is called once per
    distinct schedule. Runs trials until the study holds ``trials`` COMPLETE trials (the
    seed trials always run; see the module docstring for the search space, the seeds,
    deduplication and resuming). ``on_trial(number, schedule, value, best_schedule,
    best_value)`` is called after every trial this call completes; ``should_stop()`` is
    checked before every trial, and a True ends the search cleanly (the stored study is
    kept and resumes on the next call).

    Returns the best schedule found (``source="anchor"``; metrics ``objective``,
    ``trials`` (COMPLETE trials in the study), ``objective_calls`` (real calls in this
    call), ``objective_calls_total`` (in the study), ``best_trial``; params ``knots``,
    ``seed``, ``study_name``, ``increments`` (the best trial's parameters) and, when the
    best trial is a seed trial, ``seed_trial`` (its label; its schedule is the exact seed,
    which the increments only approximate)) and the Optuna study. ``extra_seeds``: more
    ``(label, schedule)`` seed trials (e.g. the graph search's solution at this budget),
    measured first like the others. Raises :class:`AnchorSearchError` for invalid inputs,
    and when the search stopped before any trial completed.
    """
    steps, budget, reference, trials, knots, seed = _validate(
        objective, steps, budget, reference, trials, seed, storage, study_name, knots, on_trial, should_stop
    )
    names = param_names(knots)
    study = _open_study(storage, study_name, seed, steps, budget, knots, reference)
    reclaimed = reclaim_dead_trials(study)
    measured = _measured_from(study)
    _enqueue_seeds(study, names, measured, _seed_trials(reference, budget, steps, knots, extra_seeds))
    trial_runner = _TrialRunner(objective, study, names, budget, steps, measured)
    after_trial = _reporter(on_trial)
    while True:
        _, complete, _ = _best(study)
        seeds_waiting = any(ATTR_SEED_SCHEDULE in t.user_attrs
                            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if (complete >= trials and not seeds_waiting) or (should_stop is not None and should_stop()):
            break
        study.optimize(trial_runner, n_trials=1, callbacks=[after_trial], catch=(), gc_after_trial=False)
    return _anchor_of(study, names, knots, seed, trial_runner.calls, reclaimed), study


def _open_study(storage, study_name, seed: int, steps: int, budget: int, knots: int, reference) -> optuna.Study:
    """Create or resume the study (multivariate TPE, fixed seed) and check it was made for this search."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP_TRIALS, multivariate=True)
    study = optuna.create_study(storage=_open_storage(storage), sampler=sampler, study_name=study_name,
                                direction="minimize", load_if_exists=True)
    _check_study(study, steps, budget, knots, seed, reference)
    return study


def _enqueue_seeds(study: optuna.Study, names: list[str], measured: dict[str, float], seeds) -> None:
    """Queue each seed trial whose schedule is neither measured nor already waiting."""
    waiting = {t.user_attrs.get(ATTR_SEED_SCHEDULE) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for label, schedule, params in seeds:
        key = str(schedule)
        if key in measured or key in waiting:
            continue
        study.enqueue_trial(dict(zip(names, params)), user_attrs={ATTR_SEED: label, ATTR_SEED_SCHEDULE: key})
        waiting.add(key)


class _TrialRunner:
    """One trial: the schedule it proposes, scored once (a schedule measured before, here or by another worker, is reused)."""

    def __init__(self, objective: Objective, study: optuna.Study, names: list[str], budget: int, steps: int,
                 measured: dict[str, float]):
        self.objective, self.study, self.names = objective, study, names
        self.budget, self.steps, self.measured = budget, steps, measured
        self.calls = 0

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(ATTR_OWNER, owner_token())
        increments = [trial.suggest_float(name, INCREMENT_LOW, INCREMENT_HIGH, log=True) for name in self.names]
        fixed = trial.user_attrs.get(ATTR_SEED_SCHEDULE)
        if fixed is not None:
            schedule = Schedule.parse(fixed, source="anchor")
        else:
            schedule = schedule_from_increments(increments, self.budget, self.steps, source="anchor")
        key = str(schedule)
        trial.set_user_attr(ATTR_SCHEDULE, key)
        if key not in self.measured:
            self.measured.update(_measured_from(self.study))  # another worker may have measured it
        if key in self.measured:
            trial.set_user_attr(ATTR_MEASURED, False)
            return self.measured[key]
        value = self.objective(schedule)
        if not _is_finite_number(value):
            raise AnchorSearchError(f"the objective returned {value!r} for schedule {key}; it must return a finite number")
        self.calls += 1
        self.measured[key] = float(value)
        trial.set_user_attr(ATTR_MEASURED, True)
        return float(value)


def _reporter(on_trial: OnTrial | None):
    """The Optuna callback that hands each COMPLETE trial and the best so far to ``on_trial``."""

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_trial is None or frozen.state != TrialState.COMPLETE:
            return
        best, _, _ = _best(study)
        on_trial(frozen.number, Schedule.parse(frozen.user_attrs[ATTR_SCHEDULE], source="anchor"), float(frozen.value),
                 Schedule.parse(best.user_attrs[ATTR_SCHEDULE], source="anchor"), float(best.value))

    return after_trial


def _anchor_of(study: optuna.Study, names: list[str], knots: int, seed: int, calls: int, reclaimed: int) -> Schedule:
    """The study's best trial as the anchor schedule, with its params and metrics (see :func:`search`)."""
    best, complete, total_calls = _best(study)
    if best is None:
        raise AnchorSearchError(
            f"the anchor search stopped before any trial completed (study {study.study_name!r}); run it again to resume"
        )
    params = {"knots": knots, "seed": seed, "study_name": study.study_name,
              "increments": [best.params[name] for name in names],
              **({"seed_trial": best.user_attrs[ATTR_SEED]} if ATTR_SEED in best.user_attrs else {})}
    metrics = {"objective": float(best.value), "trials": complete, "objective_calls": calls,
               "objective_calls_total": total_calls, "best_trial": best.number, "reclaimed_trials": reclaimed}
    return Schedule.parse(best.user_attrs[ATTR_SCHEDULE], source="anchor", params=params, metrics=metrics)
