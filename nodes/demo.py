"""OTCache/demo: a tiny real ComfyUI model with conditioning and latent, for trying the pack offline.

No checkpoint, text encoder or download needed: the model is one of ComfyUI's own
FLUX / Qwen-Image / HunyuanVideo / Wan classes at a tiny size with seeded weights, and
the prompt is turned into an embedding by hashing. Its pictures mean nothing; it is
there to wire up and time a graph (and for the test suite's server checks).
"""
from __future__ import annotations

import hashlib

from comfy_api.latest import io

from .tiny_models import FAMILIES, TINY_SPECS, LatentRGBDecoder, build_tiny_model, tiny_conditioning, tiny_latent

DEMO_CATEGORY = "OTCache/demo"


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
                "empty latent and a fixed latent-to-RGB decoder, so an OTCache graph runs without any download. Its images are noise-like: use "
                "it to try the nodes and check call counts, not to judge quality."
            ),
            inputs=[
                io.Combo.Input("family", options=list(FAMILIES), default="flux",
                               tooltip="Which ComfyUI model class to build: flux, qwen_image, hunyuan_video, or wan21 (a family the block cache does not know)."),
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
                io.Vae.Output(display_name="VAE", tooltip="A fixed latent-to-RGB decoder (8x upscale) for VAEDecode and the anchor search."),
            ],
        )

    @classmethod
    def execute(cls, family, weight_seed, positive, negative, width, height, batch_size) -> io.NodeOutput:
        model = build_tiny_model(family, seed=weight_seed, scale=0.5)
        latent = tiny_latent(family, batch=batch_size, height=height // 8, width=width // 8)
        decoder = LatentRGBDecoder(TINY_SPECS[family].latent_channels, seed=weight_seed)
        return io.NodeOutput(model, prompt_conditioning(family, positive), prompt_conditioning(family, negative), latent,
                             decoder)
