"""A throwaway PostgreSQL server on a loopback port, for tests of shared Optuna studies.

Uses the Debian ``postgresql`` binaries that ``scripts/setup_host.py --test-tools``
installs. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (created by the Debian package).
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.server import free_port


def _program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL's {name} is not installed; run `python3 scripts/setup_host.py --test-tools`.")


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://otcache@127.0.0.1:{self.port}/otcache"

    def stop(self) -> None:
        subprocess.run(self.run_as + [_program("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)


def start_postgres(workdir: Path) -> PostgresServer:
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir, socket_dir = workdir / "data", workdir / "sock"
    socket_dir.mkdir(exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (workdir, socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(cmd: list[str], what: str) -> None:
        proc = subprocess.run(run_as + cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    run([_program("initdb"), "-D", str(data_dir), "-A", "trust", "-U", "otcache", "--no-sync"], "initdb")
    options = f"-p {port} -k {socket_dir} -h 127.0.0.1 -c fsync=off -c max_connections=50"
    run([_program("pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(workdir / "postgres.log"), "-w", "start"],
        "pg_ctl start")
    server = PostgresServer(data_dir, port, run_as)
    try:
        run([_program("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "otcache", "otcache"], "createdb")
    except Exception:
        server.stop()
        raise
    return server
