"""OTCache/demo: tiny real ComfyUI models with conditioning, latent and decoder, for trying the pack offline.

No checkpoint, text encoder or download needed.

- **OTCache Tiny FLUX (trained)** (:class:`OTCacheTinyFlux`): ComfyUI's own FLUX class at
  1.4M parameters, trained on procedural shapes (``benchmarks/tiny``), with its fixed
  prompt encoder (:class:`.tiny_data.PromptEncoder`) and latent decoder
  (:class:`.tiny_data.PatchCodec`). Its pictures follow the prompt, so speed *and*
  fidelity of a caching schedule can be judged on a CPU (``scripts/demo``).
- **OTCache Tiny Demo Model** (:class:`OTCacheDemoModel`): one of ComfyUI's FLUX /
  Qwen-Image / HunyuanVideo / Wan classes at a tiny size with seeded random weights, the
  prompt turned into an embedding by hashing. Its pictures mean nothing; it is there to
  wire up and time a graph (and for the test suite's server checks).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from comfy_api.latest import io

from ..demo import tiny_data
from ..demo.tiny import TinyWeightsError, load_weights, weights_path
from ..demo.tiny_models import FAMILIES, TINY_SPECS, LatentRGBDecoder, build_tiny_model, tiny_conditioning, tiny_latent

DEMO_CATEGORY = "OTCache/demo"
PACK_ROOT = Path(__file__).resolve().parent.parent
TINY_FLUX_WEIGHTS = weights_path("flux")


def prompt_conditioning(family: str, prompt: str, tokens: int = 8) -> list:
    """A CONDITIONING whose embedding is a deterministic function of the prompt text."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little") >> 1
    return tiny_conditioning(family, seed, tokens=tokens)


class OTCacheDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheDemoModel",
            display_name="OTCache Tiny Demo Model",
            category=DEMO_CATEGORY,
            description=(
                "A tiny real ComfyUI diffusion model (seeded random weights) with text conditioning and an "
                "empty latent and a fixed latent-to-RGB decoder, so an OTCache graph runs "
                "without any download. Its images are noise-like: use "
                "it to try the nodes and check call counts, not to judge quality."
            ),
            inputs=[
                io.Combo.Input("family", options=list(FAMILIES), default="flux",
                               tooltip=("Which ComfyUI model class to build: flux, qwen_image, hunyuan_video, "
                                        "or wan21 (a family the block cache does not know).")),
                io.Int.Input("weight_seed", default=0, min=0, max=2**31 - 1, tooltip="Seed for the model's random weights."),
                io.String.Input("positive", default="a red circle on a blue background", multiline=True,
                                tooltip="Text hashed into the positive embedding."),
                io.String.Input("negative", default="", multiline=True, tooltip="Text hashed into the negative embedding."),
                io.Int.Input("width", default=64, min=16, max=512, step=16, tooltip="Image width in pixels (latent is width/8)."),
                io.Int.Input("height", default=64, min=16, max=512, step=16, tooltip="Image height in pixels (latent is height/8)."),
                io.Int.Input("batch_size", default=1, min=1, max=16, tooltip="Latents in the batch."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The tiny model."),
                io.Conditioning.Output(display_name="positive", tooltip="Embedding of the positive text."),
                io.Conditioning.Output(display_name="negative", tooltip="Embedding of the negative text."),
                io.Latent.Output(display_name="LATENT", tooltip="An empty latent of the model's layout."),
                io.Vae.Output(display_name="VAE", tooltip=("A fixed latent-to-RGB decoder (8x upscale) for "
                                                           "VAEDecode and the anchor search.")),
            ],
        )

    @classmethod
    def execute(cls, family, weight_seed, positive, negative, width, height, batch_size) -> io.NodeOutput:
        model = build_tiny_model(family, seed=weight_seed, scale=0.5)
        latent = tiny_latent(family, batch=batch_size, height=height // 8, width=width // 8)
        decoder = LatentRGBDecoder(TINY_SPECS[family].latent_channels, seed=weight_seed)
        return io.NodeOutput(model, prompt_conditioning(family, positive), prompt_conditioning(family, negative), latent,
                             decoder)


# ---------------------------------------------------------------- the trained tiny FLUX


TinyFluxWeightsError = TinyWeightsError  # the name the tests and older code know


def _weights_stamp(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


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
NEGATIVE_WHEN_EMPTY = "any background; any any"


def tiny_flux_conditioning(text: str) -> list:
    """CONDITIONING of a prompt text (:func:`.tiny_data.parse_prompt`, then the fixed encoder): ``[[[1, 8, 32], {}]]``."""
    context = tiny_data.PromptEncoder()(tiny_data.parse_prompt(text))
    return [[context[None], {}]]


class OTCacheTinyFlux(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheTinyFlux",
            display_name="OTCache Tiny FLUX (trained)",
            category=DEMO_CATEGORY,
            description=(
                "A 1.4M-parameter FLUX (ComfyUI's own FLUX model class) trained on procedural shapes, for trying "
                "OTCache on a CPU: real speed and real fidelity in seconds, no download. It loads the bundled "
                "weights (demo/weights/flux.safetensors) and gives the model, the prompt's conditioning, "
                "an empty 32x32 latent (64x64 pixels) and its fixed decoder as a VAE. Prompts: "
                f"'{tiny_data.PROMPT_FORM}', e.g. '{tiny_data.PROMPT_EXAMPLE}'. Sample with euler / simple / cfg 1."
            ),
            inputs=[
                io.String.Input("prompt", default=DEFAULT_TINY_FLUX_PROMPT, tooltip=(
                    f"What to draw: {tiny_data.PROMPT_FORM}, 1 to 3 objects. Words: {tiny_data.prompt_vocabulary()}. "
                    "'any' leaves it to the model; positions, sizes and extra small shapes are always open.")),
                io.String.Input("negative", default="", tooltip=(
                    "Negative prompt in the same form, used only at cfg above 1 (the model was trained without "
                    f"guidance; cfg 1 is right). Empty: '{NEGATIVE_WHEN_EMPTY}', the least specific prompt.")),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Latents in the batch (each gets its own noise from the sampler's seed)."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The trained tiny FLUX (float32)."),
                io.Conditioning.Output(display_name="positive", tooltip="The prompt's embedding (8 tokens x 32)."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt's embedding."),
                io.Latent.Output(display_name="LATENT", tooltip=("An empty latent, 16 x 32 x 32 (64 x 64 pixels), "
                                                                 "the size the model was trained at.")),
                io.Vae.Output(display_name="VAE", tooltip=("The model's fixed linear decoder (each latent pixel is a 2x2 "
                                                           "RGB patch), for VAEDecode and the anchor search.")),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt, negative) -> bool | str:
        # Checked when the workflow is queued, before anything runs.
        for text in (prompt, (negative.strip() if isinstance(negative, str) else negative) or NEGATIVE_WHEN_EMPTY):
            if not isinstance(text, str):  # linked from another node: checked when it runs
                continue
            try:
                tiny_data.parse_prompt(text)
            except tiny_data.PromptSyntaxError as error:
                return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, prompt, negative, batch_size):
        # A replaced weights file (retrained) re-runs the node.
        try:
            return _weights_stamp(TINY_FLUX_WEIGHTS)
        except OSError:
            return "missing"

    @classmethod
    def execute(cls, prompt, negative="", batch_size=1) -> io.NodeOutput:
        positive = tiny_flux_conditioning(prompt)
        negative_cond = tiny_flux_conditioning(negative.strip() or NEGATIVE_WHEN_EMPTY)
        model, _ = load_tiny_flux()
        latent = tiny_latent("flux", batch=batch_size, height=tiny_data.LATENT, width=tiny_data.LATENT)
        return io.NodeOutput(model, positive, negative_cond, latent, TinyFluxDecoder(model.model.latent_format))
