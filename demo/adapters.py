"""What the demo nodes hand to ComfyUI: the trained tiny FLUX, its decoder as a VAE, prompt conditioning.

The nodes in ``nodes/demo.py`` are thin adapters over these.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from . import tiny_data
from .tiny import TinyWeightsError, load_weights, weights_path
from .tiny_models import tiny_conditioning

TINY_FLUX_WEIGHTS = weights_path("flux")


def prompt_conditioning(family: str, prompt: str, tokens: int = 8) -> list:
    """A CONDITIONING whose embedding is a deterministic function of the prompt text."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little") >> 1
    return tiny_conditioning(family, seed, tokens=tokens)


TinyFluxWeightsError = TinyWeightsError  # the name the tests and older code know


def tiny_flux_stamp() -> tuple | str:
    """What identifies the tiny FLUX weights file now (a retrained file re-runs the node)."""
    try:
        stat = TINY_FLUX_WEIGHTS.stat()
    except OSError:
        return "missing"
    return (str(TINY_FLUX_WEIGHTS), stat.st_size, stat.st_mtime_ns)


def load_tiny_flux(path: Path | str | None = None):
    """The trained tiny FLUX as a ComfyUI ModelPatcher (float32), and the file's metadata (``demo.tiny``)."""
    try:
        return load_weights("flux", path if path is not None else TINY_FLUX_WEIGHTS)
    except TinyWeightsError as error:
        raise TinyWeightsError(f"OTCache Tiny FLUX (trained): {error}") from None


class TinyFluxDecoder:
    """The tiny FLUX's fixed latent codec as a VAE: what VAEDecode, VAEEncode and the anchor search call.

    ``decode`` takes the KSampler's latent ``[B, 16, h, w]`` (FLUX's user space) and returns
    an IMAGE ``[B, 2h, 2w, 3]`` on the CPU; ``encode`` takes an IMAGE and returns the latent
    in the same space as a VAE would (so VAEEncode -> KSampler with denoise < 1 works).
    Pixel sizes must be even (one latent pixel is a 2x2 patch).
    """

    upscale_ratio = downscale_ratio = tiny_data.PATCH
    latent_channels = tiny_data.CHANNELS
    latent_dim = 2

    def __init__(self, latent_format=None):
        self.codec = tiny_data.PatchCodec(latent_format=latent_format)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(samples)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels[..., :3]
        if pixels.shape[-2] % tiny_data.PATCH or pixels.shape[-3] % tiny_data.PATCH:
            raise ValueError(f"OTCache Tiny FLUX decoder: image size {tuple(pixels.shape[-3:-1])} must be even")
        return self.codec.to_user(self.codec.encode(pixels.cpu()))

    def spacial_compression_decode(self) -> int:
        return tiny_data.PATCH

    def spacial_compression_encode(self) -> int:
        return tiny_data.PATCH

    def temporal_compression_decode(self):
        return None


DEFAULT_TINY_FLUX_PROMPT = tiny_data.PROMPT_EXAMPLE
NEGATIVE_WHEN_EMPTY = ""  # the empty prompt: what training showed for dropped conditioning


def tiny_flux_conditioning(text: str, layout: str = "object") -> list:
    """CONDITIONING of a prompt text (:func:`.tiny_data.parse_prompt`, then the fixed encoder): ``[[[1, 8, 32], {}]]``.

    Empty text is the empty prompt (every token padding), cfg's natural negative for this model.
    ``layout`` is the loaded weights' prompt token layout (:func:`.tiny.token_layout`).
    """
    encoder = tiny_data.PromptEncoder(layout=layout)
    context = encoder.null() if not text.strip() else encoder(tiny_data.parse_prompt(text))
    return [[context[None], {}]]
