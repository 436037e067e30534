"""Train the prompt check's background classifier (``demo/train_prompt_check.py``) from the benchmark folder."""
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (imports the pack)

if __name__ == "__main__":
    runpy.run_module("comfyui_otcache.demo.train_prompt_check", run_name="__main__")
