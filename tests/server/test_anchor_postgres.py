"""Two worker processes on one anchor study in a real PostgreSQL server (loopback, test-owned)."""
from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

WORKER = r"""
import json, sys
from otcache_core.anchor import search
from otcache_core.schedule import Schedule

target = Schedule.parse("28:0,1,3,6,27")
calls = []

def objective(schedule):
    calls.append(str(schedule))
    return sum(abs(a - b) for a, b in zip(schedule.compute, target.compute))

finished = []
search(objective, 28, 5, trials={trials}, seed={seed}, storage={url!r}, study_name="otcache-shared",
       on_trial=lambda number, *rest: finished.append(number))
print(json.dumps({{"finished": finished, "calls": calls}}))
"""


@pytest.mark.server  # starts a PostgreSQL server
def test_two_workers_share_one_study_without_losing_trials(postgres_url):
    trials = 12
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER.format(trials=trials, seed=seed,
                                                              url=postgres_url)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (0, 1)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    study = optuna.load_study(study_name="otcache-shared", storage=postgres_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    numbers = [t.number for t in complete]
    union = set(results[0]["finished"]) | set(results[1]["finished"])
    # Every trial a worker finished is in the study, once; nothing else is.
    assert not set(results[0]["finished"]) & set(results[1]["finished"])
    assert sorted(numbers) == sorted(union) and len(numbers) == len(set(numbers))
    assert len(complete) >= trials
    # Values are shared: a schedule is measured again only when both workers met it at once.
    distinct = {t.user_attrs["otcache_schedule"] for t in complete}
    assert len(results[0]["calls"]) + len(results[1]["calls"]) <= len(distinct) + 2
