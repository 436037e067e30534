"""Where the ComfyUI host lives and how to import it in-process (shared by tests and benchmarks)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "comfyui_otcache"


def comfy_root() -> Path:
    """COMFYUI_PATH if set, else the pinned copy that scripts/setup_host.py puts in .comfyui/."""
    root = Path(os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui").resolve()
    if not (root / "main.py").is_file():
        raise RuntimeError(
            f"No ComfyUI at {root}. Run `python3 scripts/setup_host.py` (or scripts/test), "
            "or point COMFYUI_PATH at your ComfyUI."
        )
    return root


def import_comfy() -> Path:
    """Put ComfyUI on sys.path, configured for this machine (CPU unless CUDA is present)."""
    root = comfy_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    import torch

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    return root


def import_pack():
    """Import the repository as the package ``comfyui_otcache``, as ComfyUI imports a custom node."""
    if PACKAGE_NAME in sys.modules:
        return sys.modules[PACKAGE_NAME]
    spec = importlib.util.spec_from_file_location(
        PACKAGE_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_NAME] = module
    spec.loader.exec_module(module)
    return module
