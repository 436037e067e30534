"""Nothing a user made is lost: kill -9 during a calibration, a damaged calibration file.

The calibration runs in a child process that is killed with SIGKILL mid-run; the resume
in this process counts what it measures again (at most the one edge in flight).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from comfyui_otcache.otcache_comfy import calibration as cal
from comfyui_otcache.otcache_core.edge_costs import CostMatrix, window_edges

STEPS, WINDOW = 12, 4
HERE = Path(__file__).resolve().parents[1]  # tests/: sampling.py

CHILD = textwrap.dedent("""
    import sys, time
    from devtools.host import import_comfy, import_pack
    import_comfy(); import_pack()
    from comfyui_otcache.otcache_comfy import calibration as cal
    from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent
    from sampling import conditioning_pair
    from pathlib import Path
    positive, negative = conditioning_pair("flux", separate=False)
    setup = cal.SamplingSetup(build_tiny_model("flux", seed=0, scale=0.5), positive, negative, tiny_latent("flux"),
                              "euler", "simple", {steps}, 1.0)
    path = Path({path!r})
    matrix, note = cal.load_or_new(path, {steps}, {window}, 2, "global")
    def status(text):
        print("EDGE", flush=True)
        time.sleep(0.05)  # slow enough to be killed mid-run
    cal.calibrate(setup, 0, matrix, "auto", path=path, status=status)
    print("DONE", flush=True)
""")


def setup_in_process():
    from sampling import conditioning_pair

    from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent

    positive, negative = conditioning_pair("flux", separate=False)
    return cal.SamplingSetup(build_tiny_model("flux", seed=0, scale=0.5), positive, negative, tiny_latent("flux"),
                             "euler", "simple", STEPS, 1.0)


def run_child_until(path: Path, edges_before_kill: int) -> int:
    """Start the child calibration, SIGKILL it after ``edges_before_kill`` edges; the edges it reported."""
    code = CHILD.format(path=str(path), steps=STEPS, window=WINDOW)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONPATH": str(HERE)})  # the tests' sampling helpers
    seen = 0
    try:
        for line in child.stdout:
            if line.startswith("EDGE"):
                seen += 1
                if seen >= edges_before_kill:
                    os.kill(child.pid, signal.SIGKILL)
                    break
            assert not line.startswith("DONE"), "the child finished before it was killed"
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return seen


def journalled(path: Path) -> int:
    return len(cal.journal_path(path).read_text().splitlines()) - 1


@pytest.mark.slow
def test_kill_9_during_calibration_redoes_at_most_one_edge(tmp_path):
    path = tmp_path / "calibration.safetensors"
    total = 2 * len(window_edges(STEPS, WINDOW))
    reported = run_child_until(path, edges_before_kill=total // 2 + 3)  # into the second seed
    on_disk = journalled(path)
    assert on_disk >= reported  # every reported edge was durable before it was reported

    setup = setup_in_process()
    matrix, note = cal.load_or_new(path, STEPS, WINDOW, 2, "global")
    assert matrix.edges_done == on_disk and "recovered" in note
    stats = cal.calibrate(setup, 0, matrix, "auto", path=path)
    redone = stats.edges - (total - on_disk)
    print(f"\nkilled after {reported} reported edges, {on_disk} journalled; resume measured {stats.edges} "
          f"of {total}, redone {redone}, trajectories recomputed {stats.recorded}")
    assert stats.edges == total - on_disk and redone == 0
    assert stats.recorded == 0 and stats.reused_trajectories == 1  # seed 0 was complete; seed 1 read back
    assert matrix.complete

    # The result is the matrix one uninterrupted run gives.
    fresh = CostMatrix.new(STEPS, WINDOW, 2, "global")
    cal.calibrate(setup, 0, fresh, "auto")
    assert (fresh.costs() == matrix.costs()).all()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_a_damaged_calibration_file_is_rebuilt_from_the_journal(tmp_path, damage):
    path = tmp_path / "calibration.safetensors"
    setup = setup_in_process()
    matrix, _ = cal.load_or_new(path, STEPS, WINDOW, 2, "global")
    cal.calibrate(setup, 0, matrix, "auto", path=path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        header = int.from_bytes(data[:8], "little")
        broken = data[8:8 + header].replace(b"otcache.edge_costs", b"otcache.edge_cos7s")
        path.write_bytes(data[:8] + broken + data[8 + header:])

    recovered, note = cal.load_or_new(path, STEPS, WINDOW, 2, "global")
    assert recovered.complete and (recovered.costs() == matrix.costs()).all()
    assert f"recovered {matrix.edges_total} edge(s)" in note and "damaged" in note
    kept = list(tmp_path.glob("calibration.damaged-*.safetensors"))
    assert len(kept) == 1 and kept[0].read_bytes() != data  # the damaged file is kept, not overwritten
    stats = cal.calibrate(setup, 0, recovered, "auto", path=path)
    assert stats.edges == 0 and stats.recorded == 0  # nothing measured again


def test_a_torn_journal_line_is_skipped_and_counted(tmp_path):
    from comfyui_otcache.otcache_core.journal import EdgeJournal

    matrix = CostMatrix.new(8, 3, 1, "global")
    journal = EdgeJournal(tmp_path / "j.jsonl")
    journal.start(matrix)
    journal.append(0, 0, 2, 0.5)
    journal.append(0, 1, 3, 0.25)
    with open(journal.path, "a") as stream:
        stream.write('{"s": 0, "i": 2, "j"')  # a write cut short by kill -9
    replay = journal.replay(matrix)
    assert (replay.applied, replay.skipped) == (2, 1) and matrix.edges_done == 2
    assert journal.replay(CostMatrix.new(8, 4, 1, "global")).applied == 0  # other settings: ignored
    journal.start(matrix)  # same settings: kept
    assert json.loads(journal.path.read_text().splitlines()[1])["cost"] == 0.5
