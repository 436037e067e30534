"""Anchor search (otcache_core.anchor): search space, seeds, dedup, determinism, resume."""
from __future__ import annotations

import hashlib
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from comfyui_otcache.otcache_core.anchor import (
    ATTR_MEASURED,
    ATTR_RETRY_OF,
    ATTR_SCHEDULE,
    ATTR_SEED,
    HEARTBEAT_INTERVAL_S,
    AnchorSearchError,
    _seed_trials,
    increments_from_warp,
    schedule_from_increments,
    search,
    study_name_for,
    warp_from_increments,
)
from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError
from comfyui_otcache.otcache_core.warp import schedule_from_warp, warp

REPO_ROOT = Path(__file__).resolve().parents[2]
N, K = 28, 4
# Its full warp at K=4 (28:0,3,9,27) differs from its 5-knot approximation (28:0,3,10,27),
# so all three seed kinds are enqueued.
REFERENCE = Schedule.parse("28:0,1,2,3,4,6,9,13,20,27", source="reference")
GRID = np.linspace(0.0, 1.0, 201)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def warp_distance_to(target: Schedule):
    target_warp = warp(target)
    return lambda schedule: float(np.abs(warp(schedule)(GRID) - target_warp(GRID)).mean())


def pseudo_random(schedule: Schedule) -> float:
    """A rugged objective, the same in every process: a hash of the compact form."""
    return int(hashlib.sha256(str(schedule).encode()).hexdigest()[:8], 16) / 16**8


class Counting:
    def __init__(self, fn):
        self.fn = fn
        self.calls: list[str] = []

    def __call__(self, schedule: Schedule) -> float:
        assert isinstance(schedule, Schedule) and schedule.steps == N and schedule.budget == K
        self.calls.append(str(schedule))
        return self.fn(schedule)


def complete_trials(study):
    return study.get_trials(states=(TrialState.COMPLETE,))


def trial_schedules(study):
    return [t.user_attrs[ATTR_SCHEDULE] for t in sorted(complete_trials(study), key=lambda t: t.number)]


# ----------------------------------------------------------------- search space


def test_increments_define_a_monotone_warp_through_the_knots():
    q = warp_from_increments([1.0, 3.0])
    assert q.knots_u == (0.0, 0.5, 1.0) and q.knots_q == (0.0, 0.25, 1.0)
    assert warp_from_increments([0.3]).knots_q == (0.0, 1.0)  # one knot: identity
    with pytest.raises(AnchorSearchError, match="positive"):
        warp_from_increments([1.0, 0.0])


@pytest.mark.parametrize("knots", [1, 3, 5, 6])
def test_equal_increments_give_the_uniform_schedule(knots):
    for steps in range(2, 41):
        for budget in range(2, steps + 1):
            assert schedule_from_increments([1.0] * knots, budget, steps) == Schedule.uniform(steps, budget)


def test_reference_increments_reproduce_the_reference_warp_at_the_knots():
    increments = increments_from_warp(warp(REFERENCE), 5)
    assert max(increments) == 1.0 and min(increments) >= 0.05
    u = np.arange(6) / 5
    assert np.allclose(warp_from_increments(increments)(u), warp(REFERENCE)(u))


def test_seed_trials_are_the_exact_reference_its_knot_approximation_and_uniform():
    seeds = _seed_trials(REFERENCE, K, N, 5)
    assert [label for label, _, _ in seeds] == ["reference", "reference-knots", "uniform"]
    assert seeds[0][1] == schedule_from_warp(warp(REFERENCE), K, N) == Schedule.parse("28:0,3,9,27")
    assert seeds[1][1] == schedule_from_increments(seeds[1][2], K, N) != seeds[0][1]
    assert seeds[2][1] == Schedule.uniform(N, K)
    # the approximation is dropped where it gives the same schedule as the exact warp
    labels = [label for label, _, _ in _seed_trials(Schedule.parse("28:0,1,2,3,5,7,10,14,19,27"), K, N, 5)]
    assert labels == ["reference", "uniform"]


# ----------------------------------------------------------------- search quality


def test_finds_a_known_front_loaded_optimum_within_the_default_trials():
    target = schedule_from_increments([0.1, 0.1, 0.3, 1.0, 1.0], K, N)  # reachable with 5 knots
    assert target == Schedule.parse("28:0,2,9,27")  # front-loaded
    anchor, study = search(warp_distance_to(target), N, K)
    assert anchor == target and anchor.metrics["objective"] == 0.0
    assert len(complete_trials(study)) == 30
    assert anchor.source == "anchor"
    assert anchor.params["knots"] == 5 and anchor.params["seed"] == 0
    assert anchor.params["study_name"] == study.study_name
    assert schedule_from_increments(anchor.params["increments"], K, N) == target
    assert anchor.metrics["trials"] == 30 and anchor.metrics["best_trial"] >= 0
    # other sampler seeds get close (exactly there for most of them)
    distances = [search(warp_distance_to(target), N, K, seed=s)[0].metrics["objective"] for s in (1, 2, 3)]
    assert max(distances) < 0.02


@pytest.mark.parametrize("best_seed", ["uniform", "reference"])
def test_never_worse_than_its_seeds_when_a_seed_is_optimal(best_seed):
    exact_reference = schedule_from_warp(warp(REFERENCE), K, N)
    target = Schedule.uniform(N, K) if best_seed == "uniform" else exact_reference
    anchor, study = search(warp_distance_to(target), N, K, reference=REFERENCE)
    assert anchor == target and anchor.metrics["objective"] == 0.0
    assert anchor.params["seed_trial"] == best_seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_worse_than_its_seeds_on_a_rugged_objective(seed):
    objective = Counting(pseudo_random)
    anchor, study = search(objective, N, K, reference=REFERENCE, trials=12, seed=seed)
    exact_reference = schedule_from_warp(warp(REFERENCE), K, N)
    uniform = Schedule.uniform(N, K)
    assert str(exact_reference) in objective.calls and str(uniform) in objective.calls
    assert anchor.metrics["objective"] <= pseudo_random(exact_reference)
    assert anchor.metrics["objective"] <= pseudo_random(uniform)
    assert anchor.metrics["objective"] == min(pseudo_random(Schedule.parse(c)) for c in objective.calls)
    assert pseudo_random(anchor) == anchor.metrics["objective"]
    # the seeds run first, in order
    first = sorted(complete_trials(study), key=lambda t: t.number)[:3]
    assert [t.user_attrs[ATTR_SEED] for t in first] == ["reference", "reference-knots", "uniform"]


def test_seeds_run_even_when_trials_is_smaller_than_their_count():
    objective = Counting(pseudo_random)
    anchor, study = search(objective, N, K, reference=REFERENCE, trials=1)
    assert len(complete_trials(study)) == 3
    assert anchor.metrics["objective"] == min(map(pseudo_random, map(Schedule.parse, objective.calls)))


# ----------------------------------------------------------------- dedup and determinism


def test_objective_runs_once_per_distinct_schedule():
    objective = Counting(warp_distance_to(Schedule.parse("28:0,2,9,27")))
    anchor, study = search(objective, N, K, reference=REFERENCE, trials=40)
    schedules = trial_schedules(study)
    assert len(schedules) == 40
    assert len(set(schedules)) < 40  # duplicates were proposed ...
    assert sorted(objective.calls) == sorted(set(schedules))  # ... and never measured twice
    assert anchor.metrics["objective_calls"] == len(objective.calls) == anchor.metrics["objective_calls_total"]
    measured = [t for t in complete_trials(study) if t.user_attrs[ATTR_MEASURED]]
    assert len(measured) == len(objective.calls)
    values = {}
    for t in complete_trials(study):  # reused values are the measured ones
        assert values.setdefault(t.user_attrs[ATTR_SCHEDULE], t.value) == t.value


def test_same_seed_gives_the_same_study_and_another_seed_another():
    runs = [search(pseudo_random, N, K, reference=REFERENCE, trials=20, seed=s)[1] for s in (7, 7, 8)]
    sequences = [[(t.params, t.user_attrs[ATTR_SCHEDULE], t.value) for t in study.trials] for study in runs]
    assert sequences[0] == sequences[1]
    assert sequences[0] != sequences[2]


def test_on_trial_reports_every_trial_and_the_best_so_far():
    reports = []
    anchor, study = search(
        pseudo_random, N, K, reference=REFERENCE, trials=15, on_trial=lambda *args: reports.append(args)
    )
    assert [r[0] for r in reports] == list(range(15))
    best = math.inf
    for number, schedule, value, best_schedule, best_value in reports:
        assert isinstance(schedule, Schedule) and value == pseudo_random(schedule)
        best = min(best, value)
        assert best_value == best == pseudo_random(best_schedule)
    assert reports[-1][3] == anchor


def test_should_stop_is_checked_between_trials():
    done = []
    anchor, study = search(
        pseudo_random, N, K, trials=30, on_trial=lambda *a: done.append(a), should_stop=lambda: len(done) >= 6
    )
    assert len(complete_trials(study)) == 6 and anchor.metrics["trials"] == 6
    with pytest.raises(AnchorSearchError, match="stopped before any trial completed"):
        search(pseudo_random, N, K, should_stop=lambda: True)


def test_objective_must_return_a_finite_number():
    with pytest.raises(AnchorSearchError, match="finite number"):
        search(lambda s: float("nan"), N, K)


# ----------------------------------------------------------------- storage and resume


def seed_labels(study):
    return sorted(t.user_attrs[ATTR_SEED] for t in study.trials if ATTR_SEED in t.user_attrs)


@pytest.mark.slow  # real studies in subprocesses
def test_resume_after_should_stop_runs_only_the_missing_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'anchor.db'}"
    name = study_name_for(model="test", budget=K)
    first = Counting(pseudo_random)
    done = []
    search(first, N, K, reference=REFERENCE, trials=10, storage=storage, study_name=name,
           on_trial=lambda *a: done.append(a), should_stop=lambda: len(done) >= 4)
    assert len(done) == 4

    second = Counting(pseudo_random)
    anchor, study = search(second, N, K, reference=REFERENCE, trials=10, storage=storage, study_name=name)
    assert study._storage.get_heartbeat_interval() == HEARTBEAT_INTERVAL_S  # stale RUNNING trials get failed
    schedules = trial_schedules(study)
    assert len(schedules) == 10 and anchor.metrics["trials"] == 10
    assert sorted(second.calls) == sorted(set(schedules) - set(first.calls))
    assert anchor.metrics["objective_calls"] == len(second.calls)
    assert anchor.metrics["objective_calls_total"] == len(first.calls) + len(second.calls)
    assert seed_labels(study) == ["reference", "reference-knots", "uniform"]  # not repeated
    assert anchor.metrics["objective"] == min(map(pseudo_random, map(Schedule.parse, schedules)))

    # complete: a rerun runs nothing; more trials run only the extra ones
    third = Counting(pseudo_random)
    again, study = search(third, N, K, reference=REFERENCE, trials=10, storage=storage, study_name=name)
    assert third.calls == [] and again == anchor and len(complete_trials(study)) == 10
    more, study = search(third, N, K, reference=REFERENCE, trials=13, storage=storage, study_name=name)
    assert len(complete_trials(study)) == 13 and seed_labels(study) == ["reference", "reference-knots", "uniform"]


def test_stored_study_must_match_the_search(tmp_path):
    storage = f"sqlite:///{tmp_path / 'anchor.db'}"
    search(pseudo_random, N, K, trials=3, storage=storage, study_name="s")
    with pytest.raises(AnchorSearchError, match=r"made for steps=28, budget=4, knots=5 .* budget=5"):
        search(pseudo_random, N, 5, trials=3, storage=storage, study_name="s")
    with pytest.raises(AnchorSearchError, match="knots=3"):
        search(pseudo_random, N, K, trials=3, storage=storage, study_name="s", knots=3)


KILLED_RUN = """
import hashlib, os, signal, sys
from otcache_core.anchor import search
from otcache_core.schedule import Schedule
calls = []
def objective(schedule):
    calls.append(str(schedule))
    with open({log!r}, "a") as log:
        log.write(str(schedule) + "\\n")
    if len(calls) == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of a trial
    return int(hashlib.sha256(str(schedule).encode()).hexdigest()[:8], 16) / 16**8
search(objective, {n}, {k}, reference=Schedule.parse({reference!r}), trials=10,
       storage={storage!r}, study_name="killed")
"""


@pytest.mark.slow  # real studies in subprocesses
@pytest.mark.parametrize("kill_at", [1, 5])
def test_resume_after_a_hard_kill(tmp_path, kill_at):
    storage = f"sqlite:///{tmp_path / 'anchor.db'}"
    log = tmp_path / "calls.txt"
    script = KILLED_RUN.format(
        log=str(log), kill_at=kill_at, n=N, k=K, reference=str(REFERENCE), storage=storage
    )
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    killed_calls = log.read_text().split()
    assert len(killed_calls) == kill_at
    measured_before = set(killed_calls[:-1])  # the last call never finished
    stale = kill_at == 5
    if stale:  # pretend the kill was long ago: the heartbeat is older than the grace period
        with sqlite3.connect(tmp_path / "anchor.db") as db:
            assert db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00'").rowcount >= 1

    objective = Counting(pseudo_random)
    anchor, study = search(objective, N, K, reference=REFERENCE, trials=10, storage=storage, study_name="killed")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 10
    # the killed trial is never counted: its owner is gone, so the resume fails it at once (stale
    # heartbeat or not) and re-queues it with its parameters
    assert (states.count(TrialState.RUNNING), states.count(TrialState.FAIL)) == (0, 1)
    dead = next(t for t in study.trials if t.state == TrialState.FAIL)
    retries = [t for t in study.trials if t.user_attrs.get(ATTR_RETRY_OF) == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == dead.params
    assert anchor.metrics["reclaimed_trials"] == 1
    schedules = trial_schedules(study)
    assert sorted(objective.calls) == sorted(set(schedules) - measured_before)
    assert len(objective.calls) <= 10 - (kill_at - 1)
    # every seed completed exactly once, also the one that was killed (kill_at=1)
    done_seeds = sorted(t.user_attrs[ATTR_SEED] for t in complete_trials(study) if ATTR_SEED in t.user_attrs)
    assert done_seeds == ["reference", "reference-knots", "uniform"]
    assert anchor.metrics["objective"] <= pseudo_random(schedule_from_warp(warp(REFERENCE), K, N))


# ----------------------------------------------------------------- validation and names


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget=1), "anchor budget must be at least 2"),
        (dict(budget=29), "anchor budget 29 is larger than the 28 steps"),
        (dict(reference=Schedule.uniform(N, 4)), ("reference budget 4 .* must be larger than the anchor "
                                                  "budget 4: the anchor is the extreme")),
        (dict(reference=Schedule.uniform(56, 6)), r"reference budget 3 \(at 28 steps\)"),
        (dict(trials=0), "trials must be at least 1"),
        (dict(knots=0), "knots must be at least 1"),
        (dict(storage="sqlite:///x.db"), "needs a study_name"),
        (dict(storage="anchor.db", study_name="x"), "not a storage URL"),
        (dict(storage=3, study_name="x"), "storage must be None"),
        (dict(study_name=""), "study_name must be a non-empty string"),
        (dict(on_trial=1), "on_trial must be callable"),
        (dict(budget=2.5), "must be an integer"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs, message):
    args = dict(objective=pseudo_random, steps=N, budget=K)
    args.update(kwargs)
    with pytest.raises(ScheduleError, match=message):
        search(**args)
    with pytest.raises(AnchorSearchError, match="objective must be callable"):
        search(None, N, K)


def test_study_name_is_a_stable_hash_of_the_fields():
    name = study_name_for(model="flux", steps=28, cfg=3.5, seeds=[1, 2], budget=4)
    assert name == study_name_for(budget=4, seeds=[1, 2], cfg=3.5, steps=28, model="flux")
    assert name.startswith("otcache-anchor-") and len(name) == len("otcache-anchor-") + 32
    assert name != study_name_for(model="flux", steps=28, cfg=3.5, seeds=[1, 2], budget=5)
    assert name == "otcache-anchor-" + hashlib.sha256(
        b'{"budget":4,"cfg":3.5,"model":"flux","seeds":[1,2],"steps":28}'
    ).hexdigest()[:32]
    with pytest.raises(AnchorSearchError, match="JSON values"):
        study_name_for(model=object())
    with pytest.raises(AnchorSearchError, match="at least one field"):
        study_name_for()
