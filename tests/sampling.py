"""Sampling helpers for tests: ComfyUI's own sampling path on tiny real models, with call counting."""
from __future__ import annotations

import contextlib

import comfy.sample
import torch

from comfyui_otcache.demo.tiny_models import tiny_conditioning, tiny_latent

# Evaluations per sampling run: samplers that evaluate twice per step make 2N-1.
TWO_EVAL_SAMPLERS = {"heun", "dpmpp_sde"}


def evaluations(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler in TWO_EVAL_SAMPLERS else steps


def first_block(model) -> torch.nn.Module:
    dm = model.model.diffusion_model
    for name in ("double_blocks", "transformer_blocks", "blocks"):
        blocks = getattr(dm, name, None)
        if blocks is not None and len(blocks) > 0:
            return blocks[0]
    raise AssertionError(f"no transformer blocks found on {type(dm).__name__}")


@contextlib.contextmanager
def count_block_stack_calls(model):
    """Counts real runs of the transformer block stack (calls of its first block)."""
    counter = {"calls": 0}

    def hook(*_):
        counter["calls"] += 1

    handle = first_block(model).register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def conditioning_pair(family: str, separate: bool, batch: int = 1):
    """(positive, negative). ``separate``: token counts ComfyUI cannot batch (8 vs 40 > 4x padding)."""
    positive = tiny_conditioning(family, seed=1, tokens=8, batch=1)
    negative = tiny_conditioning(family, seed=2, tokens=40 if separate else 8, batch=1)
    return positive, negative


def sample(model, family: str, steps: int = 8, sampler: str = "euler", scheduler: str = "simple",
           cfg: float = 3.0, separate: bool = False, batch: int = 1, seed: int = 0, height: int = 8,
           width: int = 8, denoise: float = 1.0, start_step=None, last_step=None, latent=None,
           force_full_denoise: bool = False) -> torch.Tensor:
    positive, negative = conditioning_pair(family, separate)
    latent_image = latent if latent is not None else tiny_latent(family, batch=batch, height=height, width=width)["samples"]
    noise = comfy.sample.prepare_noise(latent_image, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent_image,
                               denoise=denoise, start_step=start_step, last_step=last_step,
                               force_full_denoise=force_full_denoise, disable_pbar=True, seed=seed)
