"""ComfyUI's ``main.py`` as a child process: started on a port, fed API prompts, stopped by PID.

One class for the tests' server fixture and ``scripts/demo``: the server's output goes to a
log file and is kept in memory (optionally echoed), so a caller can read the lines one
prompt wrote (:meth:`ComfyServer.run`).
"""
from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .host import REPO_ROOT, comfy_root

DONE_LINE = "Prompt executed in"  # what main.py logs after each prompt


class ServerError(RuntimeError):
    """The server could not start, or a prompt was refused, failed or timed out; the message says which."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(listen: str, port: int) -> bool:
    """Nothing listens there (connections of a server stopped a moment ago, in TIME_WAIT, do not count:
    ComfyUI's aiohttp binds with SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((listen, port))
        except OSError:
            return False
    return True


def explain_rejection(body: bytes) -> str:
    """ComfyUI's /prompt validation answer, as one readable message."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:2000]
    parts = []
    error = data.get("error")
    if isinstance(error, dict):
        parts.append(error.get("message", ""))
    for node_id, node in (data.get("node_errors") or {}).items():
        for item in node.get("errors", []):
            parts.append(f"{node.get('class_type')} (node {node_id}): {item.get('details') or item.get('message')}")
    return "; ".join(p for p in parts if p) or json.dumps(data)[:2000]


def pack_root(root: Path) -> Path:
    """The pack as ``root``'s ComfyUI loads it (``custom_nodes/ComfyUI-OTCache``, set up by scripts/setup_host.py)."""
    link = root / "custom_nodes" / "ComfyUI-OTCache"
    if not link.exists():
        raise ServerError(f"the pack is not linked into {link.parent}: run python3 scripts/setup_host.py.")
    return link.resolve()


class ComfyServer:
    """``main.py --listen LISTEN --port PORT`` (``--cpu`` unless CUDA), in ``workdir``'s folders when given."""

    def __init__(self, port: int | None = None, listen: str = "127.0.0.1", workdir: Path | None = None,
                 threads: int | None = None, log_path: Path | None = None, extra_args: tuple[str, ...] = ()):
        self.root = comfy_root()
        self.pack = pack_root(self.root)
        self.listen, self.port = listen, port or free_port()
        self.workdir, self.threads, self.extra_args = workdir, threads, tuple(extra_args)
        self.log_path = log_path or (workdir / "comfyui.log" if workdir else REPO_ROOT / "test-artifacts" / "comfyui.log")
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.echo = False
        self.process: subprocess.Popen | None = None
        self.client_id = f"otcache-{os.getpid()}"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.listen in ("0.0.0.0", "::") else self.listen
        return f"http://{host}:{self.port}"

    @property
    def output_dir(self) -> Path:
        return (self.workdir / "output") if self.workdir else self.root / "output"

    def command(self) -> list[str]:
        cmd = [sys.executable, "main.py", "--listen", self.listen, "--port", str(self.port), "--disable-auto-launch"]
        if self.workdir is not None:
            for sub in ("output", "temp", "user", "input"):
                (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            cmd += ["--output-directory", str(self.workdir / "output"), "--temp-directory", str(self.workdir / "temp"),
                    "--user-directory", str(self.workdir / "user"), "--input-directory", str(self.workdir / "input"),
                    "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}"]
        import torch

        if not torch.cuda.is_available():
            cmd.append("--cpu")
        return cmd + list(self.extra_args)

    def start(self, ready_timeout: float = 300) -> ComfyServer:
        if not port_free(self.listen, self.port):
            raise ServerError(f"port {self.port} on {self.listen} is in use (another ComfyUI, or scripts/serve?): "
                              "stop it or choose another port.")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=env, bufsize=1, text=True, errors="replace")
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited with {self.process.returncode} before it answered:\n{self.tail(60)}")
            try:
                self.get("/object_info/KSampler", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(f"ComfyUI did not answer /object_info within {ready_timeout:.0f} s:\n{self.tail(60)}")

    def _read(self) -> None:
        with open(self.log_path, "w", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                with self.lock:
                    self.lines.append(line.rstrip("\n"))
                if self.echo:
                    sys.stderr.write(line)
                    sys.stderr.flush()

    # ------------------------------------------------------------ the log

    def log(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def tail(self, count: int) -> str:
        with self.lock:
            return "\n".join(self.lines[-count:])

    def mark(self) -> int:
        with self.lock:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        with self.lock:
            return list(self.lines[mark:])

    # ------------------------------------------------------------ HTTP

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def post(self, path: str, payload: dict, timeout: float = 30):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise ServerError(f"POST {path} -> {error.code}: {explain_rejection(error.read())}") from None
        return json.loads(body) if body.strip() else {}

    # ------------------------------------------------------------ prompts

    def run(self, prompt: dict, workflow: dict | None = None, what: str = "the prompt", timeout: float = 1800,
            heartbeat: float = 0, say=None) -> dict:
        """Queue an API prompt and wait for it: its history entry, with ``_log`` (the server's lines it wrote),
        ``_seconds`` (execution start to success, server side) and ``_cached`` (node ids taken from the cache)."""
        mark = self.mark()
        payload = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        prompt_id = self.post("/prompt", payload)["prompt_id"]
        start = time.monotonic()
        next_beat = start + heartbeat if heartbeat else math.inf
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                break
            if self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited with {self.process.returncode} during {what}:\n{self.tail(40)}")
            now = time.monotonic()
            if now - start > timeout:
                raise ServerError(f"{what} did not finish in {timeout:.0f} s:\n{self.tail(20)}")
            if now >= next_beat and say is not None:
                say(f"  ... {now - start:.0f} s")
                next_beat += heartbeat
            time.sleep(0.1)
        status = entry["status"]
        if status.get("status_str") != "success":
            errors = [data for event, data in status.get("messages", []) if event == "execution_error"]
            detail = "; ".join(f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_message', '').strip()}"
                               for e in errors) or json.dumps(status)[:2000]
            raise ServerError(f"{what} failed: {detail}\n{self.tail(40)}")
        # The log line after a prompt comes after its history entry: wait for it, so the slice holds its reports.
        deadline = time.monotonic() + 15
        while not any(DONE_LINE in line for line in self.since(mark)) and time.monotonic() < deadline:
            time.sleep(0.05)
        messages = status.get("messages", [])
        stamps = {event: data.get("timestamp") for event, data in messages}
        cached = next((data.get("nodes", []) for event, data in messages if event == "execution_cached"), [])
        entry["_log"] = self.since(mark)
        entry["_seconds"] = ((stamps["execution_success"] - stamps["execution_start"]) / 1000.0
                             if stamps.get("execution_success") and stamps.get("execution_start") else math.nan)
        entry["_cached"] = {str(node) for node in cached}
        return entry

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format prompt and wait for its history entry (the tests' short form of :meth:`run`)."""
        return self.run(prompt, timeout=timeout)

    def image(self, entry: dict, save_id: str):
        """The first image a SaveImage node wrote in this prompt, as float ``[H, W, 3]`` in [0, 1], and its file info."""
        import numpy as np
        from PIL import Image

        files = entry["outputs"].get(save_id, {}).get("images", [])
        if not files:
            raise ServerError(f"SaveImage node {save_id} reported no image")
        info = files[0]
        query = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info.get("subfolder", ""),
                                        "type": info.get("type", "output")})
        data = self.get_bytes(f"/view?{query}")
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 255.0, info

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_server(workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 ready_timeout: float = 120) -> ComfyServer:
    """A server on a free loopback port with its folders in ``workdir``, answering /object_info."""
    return ComfyServer(port=port, workdir=workdir, extra_args=extra_args).start(ready_timeout)
