"""Train the prompt check's background classifier and report how often true renders pass the check.

    .venv/bin/python benchmarks/tiny/train_prompt_check.py

Deterministic for a given thread count; writes ``demo/weights/background_check.safetensors``.
The held-out figure is the check's own ceiling: how often it passes *true* renders of
held-out prompts, the bar a model's samples are then held to.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from . import prompt_check as pc
from . import tiny_data as data


def render_heldout(count: int, seed: int = 5) -> tuple[list, torch.Tensor, torch.Tensor]:
    """True renders of the held-out prompts: (prompts, images 64x64, first frames of clips at 32x32)."""
    prompts = data.held_out_prompts(count)
    rng = np.random.default_rng([seed, 99])
    images = np.stack([data.render(p, rng) for p in prompts])
    # 32x32 frames, as when the shipped classifier was measured (the rng draws are the same at any size)
    frames = np.stack([data.render_clip(p, rng, frames=1, size=32)[0] for p in prompts])
    return prompts, torch.from_numpy(images).float(), torch.from_numpy(frames).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heldout", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = pc.train_background_classifier(steps=args.steps)
    from safetensors.torch import save_file

    pc.WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    prompts, images, frames = render_heldout(args.heldout)
    report = {"steps": args.steps, "threads": args.threads, "heldout_prompts": args.heldout,
              "pass_true_images": float(np.mean(pc.check_images(model, prompts, images))),
              "pass_true_frames": float(np.mean(pc.check_images(model, prompts, frames)))}
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}  # float16: small to ship
    save_file(state, str(pc.WEIGHTS), metadata={k: str(v) for k, v in report.items()})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
