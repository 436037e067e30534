"""Test harness: the pack as ComfyUI imports it, tiny real models, a real ComfyUI server.

Markers (see pyproject.toml): ``server`` starts ComfyUI's main.py, ``browser`` drives
headless Chromium, ``slow`` is the long tail; ``-m "not server and not browser and not slow"``
is the fast subset.
"""
from __future__ import annotations

from devtools.host import import_comfy, import_pack

from pathlib import Path

import pytest
from hypothesis import settings

import_comfy()
import_pack()

# No per-example time limit: on a loaded 2-core CI machine hypothesis' 200 ms default fails
# correct tests at random (seen with the interpolation properties beside a training job).
settings.register_profile("otcache", deadline=None)
settings.load_profile("otcache")


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI server (main.py) with the pack in custom_nodes; stopped by PID at the end."""
    from devtools.server import start_server

    server = start_server(tmp_path_factory.mktemp("comfyui-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def object_info(comfy_server) -> dict:
    """The running server's /object_info (node schemas)."""
    return comfy_server.get("/object_info", timeout=60)


@pytest.fixture(params=["flux", "qwen_image", "hunyuan_video"])
def dit_family(request):
    return request.param


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a real PostgreSQL server on a free loopback port, stopped at the end of the session."""
    import shutil
    import tempfile

    from postgres_server import start_postgres

    # Not under pytest's tmp dir: as root the server runs as `postgres`, which cannot enter it.
    workdir = Path(tempfile.mkdtemp(prefix="otcache-postgres-"))
    server = start_postgres(workdir)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
