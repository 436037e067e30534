"""Two worker processes share one calibration through a real PostgreSQL server; one is killed mid-edge."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import sqlalchemy as sa

WORKER = r"""
import json, math, sys, time, torch
torch.set_num_threads(1)
from devtools.host import import_comfy, import_pack
import_comfy(); import_pack()
from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent
from comfyui_otcache.otcache_comfy import calibration as cal
from comfyui_otcache.otcache_core.edge_costs import CostMatrix
from comfyui_otcache.otcache_core.shared_edges import SharedEdges
sys.path.insert(0, "tests")
from sampling import conditioning_pair

hang_after = int(sys.argv[2])  # edges to compute before claiming one more and hanging (-1: never)
shared = SharedEdges(sys.argv[1], "shared-test")
claim, put, computed = shared.claim, shared.put, []

def put_counted(unit, payload):
    computed.append(unit)
    put(unit, payload)

def claim_then_hang(unit):
    won = claim(unit)
    if won and len(computed) == hang_after:
        print(json.dumps({"hanging_on": unit, "computed": computed}), flush=True)
        time.sleep(3600)
    return won

shared.put, shared.claim = put_counted, claim_then_hang
positive, negative = conditioning_pair("flux", separate=False)
setup = cal.SamplingSetup(build_tiny_model("flux", seed=0, scale=0.5), positive, negative, tiny_latent("flux"),
                          "euler", "simple", 12, 1.0)
matrix = CostMatrix.new(12, 4, 1, "global")
stats = cal.calibrate(setup, 3, matrix, "output", shared=shared)
print(json.dumps({"computed": computed, "costs": [[c if math.isfinite(c) else None for c in row]
                                                   for row in matrix.costs()], "workers": shared.workers(),
                  "shared_edges": stats.shared_edges}), flush=True)
"""


def start(url: str, hang_after: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, str(hang_after)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.server  # starts a PostgreSQL server
def test_a_killed_workers_edges_are_taken_over_and_none_is_computed_twice(postgres_url):
    from sampling import conditioning_pair

    from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent
    from comfyui_otcache.otcache_comfy import calibration as cal
    from comfyui_otcache.otcache_core.edge_costs import CostMatrix, window_edges

    doomed = start(postgres_url, hang_after=3)
    line = doomed.stdout.readline()  # computes 3 edges, claims a 4th, then hangs in it
    assert line, doomed.stderr.read()[-3000:]
    hung = json.loads(line)
    survivor = start(postgres_url, hang_after=-1)
    time.sleep(1.0)
    os.kill(doomed.pid, signal.SIGKILL)  # killed mid-edge, its claim still in the table
    doomed.wait(timeout=30)
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])

    edges = window_edges(12, 4)
    units = {f"edge:0:{i}:{j}" for i, j in edges}
    engine = sa.create_engine(postgres_url)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT unit, worker FROM otcache_calibration_results WHERE key = 'shared-test'")).all()
    stored = [unit for unit, _ in rows]
    # Every edge computed once across the two workers, and the killed worker's claimed edge taken over.
    assert sorted(stored) == sorted(units)
    assert len(hung["computed"]) == 3 and not set(hung["computed"]) & set(result["computed"])
    assert set(hung["computed"]) | set(result["computed"]) == units
    assert hung["hanging_on"] in result["computed"]
    assert result["shared_edges"] == len(result["computed"]) == len(units) - 3
    assert sorted(result["workers"].values()) == [3, len(units) - 3]

    # The same matrix as one worker alone.
    positive, negative = conditioning_pair("flux", separate=False)
    setup = cal.SamplingSetup(build_tiny_model("flux", seed=0, scale=0.5), positive, negative, tiny_latent("flux"),
                              "euler", "simple", 12, 1.0)
    alone = CostMatrix.new(12, 4, 1, "global")
    cal.calibrate(setup, 3, alone, "output")
    shared = np.array([[np.inf if c is None else c for c in row] for row in result["costs"]])
    np.testing.assert_allclose(shared, alone.costs(), rtol=1e-5)
