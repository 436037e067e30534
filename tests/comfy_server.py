"""Start and stop a real ComfyUI server with the pack installed (tests, demo, browser checks)."""
from __future__ import annotations

from host import comfy_root

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from e

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format workflow and wait for its history entry."""
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": "otcache-tests"})["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") == "success":
                    return entry
                raise RuntimeError(f"prompt failed: {json.dumps(entry['status'], indent=1)}\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(workdir: Path, port: int | None = None, extra_args: list[str] = (),
                 ready_timeout: float = 120) -> ComfyServer:
    """Run ``main.py --cpu`` (unless CUDA) on a free loopback port; wait for /object_info."""
    root = comfy_root()
    link = root / "custom_nodes" / "ComfyUI-OTCache"
    if not link.exists():
        raise RuntimeError(f"The pack is not linked into {link.parent}; run scripts/setup_host.py first.")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("output", "temp", "user", "input"):
        (workdir / sub).mkdir(exist_ok=True)
    log_path = workdir / "comfyui.log"
    cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--output-directory", str(workdir / "output"),
           "--temp-directory", str(workdir / "temp"), "--user-directory", str(workdir / "user"),
           "--input-directory", str(workdir / "input"),
           "--database-url", f"sqlite:///{workdir / 'comfyui.db'}", *extra_args]
    import torch

    if not torch.cuda.is_available():
        cmd.append("--cpu")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ComfyServer(process, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {process.returncode} before it answered:\n{server.log()[-6000:]}")
        try:
            server.get("/object_info/KSampler", timeout=2)
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"ComfyUI did not answer /object_info within {ready_timeout} s:\n{server.log()[-6000:]}")
