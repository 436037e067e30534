"""otcache_core.atomic.write_atomic: whole files or the old ones, with ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from comfyui_otcache.otcache_core.atomic import write_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path, umask_022):
    path = write_atomic(tmp_path / "sub" / "schedule.json", '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert _mode(path) == 0o644
    assert os.listdir(path.parent) == ["schedule.json"]


def test_rewrite_keeps_the_old_files_mode(tmp_path, umask_022):
    path = tmp_path / "study.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o640


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["cal.json"]
