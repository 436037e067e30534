"""Train the prompt check's background classifier (``demo/train_prompt_check.py``) from the benchmark folder."""
import benchmarks.tiny.common  # noqa: F401  (imports ComfyUI and the pack)

import runpy

if __name__ == "__main__":
    runpy.run_module("comfyui_otcache.demo.train_prompt_check", run_name="__main__")
