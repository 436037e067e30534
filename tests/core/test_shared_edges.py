"""Claims and results of a shared calibration, on an SQLite file (the PostgreSQL run is in tests/server)."""
from __future__ import annotations

import json

import pytest

from comfyui_otcache.otcache_core import shared_edges
from comfyui_otcache.otcache_core.shared_edges import SharedEdges, SharedEdgesError


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'shared.db'}"


def test_a_unit_is_claimed_once_and_its_result_stored_once(url):
    a, b = SharedEdges(url, "k"), SharedEdges(url, "k")
    b.me = json.dumps({"host": "another-machine", "pid": 1, "start": "1"})  # a second worker elsewhere
    try:
        assert a.claim("edge:0:0:2") and a.claim("edge:0:0:2")  # its own claim stays its own
        assert not b.claim("edge:0:0:2")
        a.put("edge:0:0:2", {"cost": 0.5})
        assert not b.claim("edge:0:0:2") and not a.claim("edge:0:0:2")  # done: nobody computes it again
        assert b.results() == {"edge:0:0:2": {"cost": 0.5}}
        assert SharedEdges(url, "other").results() == {}  # another calibration's units are apart
        assert list(a.workers().values()) == [1]
    finally:
        a.close(), b.close()


def test_a_dead_or_silent_owners_claim_is_taken_over(url, monkeypatch):
    a, b = SharedEdges(url, "k"), SharedEdges(url, "k", stale_seconds=3600)
    b.me = json.dumps({"host": "another-machine", "pid": 1, "start": "1"})
    try:
        assert b.claim("edge:0:1:3")
        assert not a.claim("edge:0:1:3")  # another host, beating: not taken
        monkeypatch.setattr(shared_edges, "owner_is_dead", lambda owner: True)  # b's process is gone
        assert a.claim("edge:0:1:3")
        monkeypatch.undo()
        assert not b.claim("edge:0:1:3")  # a is alive and beating: the unit stays a's
        silent = SharedEdges(url, "k", stale_seconds=0.0)  # no beat within 0 s: a counts as silent
        silent.me = json.dumps({"host": "third-machine", "pid": 2, "start": "2"})
        assert silent.claim("edge:0:1:3")
        silent.close()
    finally:
        a.close(), b.close()


def test_a_bad_storage_url_names_the_fix():
    with pytest.raises(SharedEdgesError, match="postgresql://user@host/db"):
        SharedEdges("nosuchdb://x", "k")
