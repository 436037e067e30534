"""OTCache/demo: tiny real ComfyUI models with conditioning, latent and decoder, for trying the pack offline.

No checkpoint, text encoder or download needed.

- **OTCache Tiny FLUX (trained)** (:class:`OTCacheTinyFlux`): ComfyUI's own FLUX class at
  2.7M parameters (8 blocks), trained on procedural shapes (``benchmarks/tiny``), with its fixed
  prompt encoder (:class:`.tiny_data.PromptEncoder`) and latent decoder
  (:class:`.tiny_data.PatchCodec`). Its pictures show the prompt's background and colours
  and, in about two thirds of objects, its shapes, so speed *and* fidelity of a caching
  schedule can be judged on a CPU (``scripts/demo``).
- **OTCache Tiny Demo Model** (:class:`OTCacheDemoModel`): one of ComfyUI's FLUX /
  Qwen-Image / HunyuanVideo / Wan classes at a tiny size with seeded random weights, the
  prompt turned into an embedding by hashing. Its pictures mean nothing; it is there to
  wire up and time a graph (and for the test suite's server checks).
"""
from __future__ import annotations

from comfy_api.latest import io

from ..demo import tiny_data
from ..demo.adapters import (  # noqa: F401  (TinyFluxWeightsError, load_tiny_flux: names older code imports from here)
    DEFAULT_TINY_FLUX_PROMPT,
    NEGATIVE_WHEN_EMPTY,
    TinyFluxDecoder,
    TinyFluxWeightsError,
    load_tiny_flux,
    prompt_conditioning,
    tiny_flux_conditioning,
    tiny_flux_stamp,
)
from ..demo.tiny import token_layout
from ..demo.tiny_models import FAMILIES, TINY_SPECS, LatentRGBDecoder, build_tiny_model, tiny_latent

DEMO_CATEGORY = "OTCache/demo"


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


class OTCacheTinyFlux(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheTinyFlux",
            display_name="OTCache Tiny FLUX (trained)",
            category=DEMO_CATEGORY,
            description=(
                "A 2.7M-parameter FLUX (ComfyUI's own FLUX model class, 8 blocks) trained on procedural shapes, for trying "
                "OTCache on a CPU: real speed and real fidelity in seconds, no download. It loads the bundled "
                "weights (demo/weights/flux.safetensors) and gives the model, the prompt's conditioning, "
                "an empty 32x32 latent (64x64 pixels) and its fixed decoder as a VAE. Prompts: "
                f"'{tiny_data.PROMPT_FORM}', e.g. '{tiny_data.PROMPT_EXAMPLE}'. Sample with euler / simple / cfg 3 (what it was "
                "trained for: the empty prompt on 10% of training samples; at lower cfg fewer shapes come out as named)."
            ),
            inputs=[
                io.String.Input("prompt", default=DEFAULT_TINY_FLUX_PROMPT, tooltip=(
                    f"What to draw: {tiny_data.PROMPT_FORM}, 1 to 3 objects. Words: {tiny_data.prompt_vocabulary()}. "
                    "'any' leaves it to the model. The k-th object sits in the k-th quarter (top left, bottom "
                    "right, top right); sizes, small shifts and the background's two tones are left open.")),
                io.String.Input("negative", default="", tooltip=(
                    "Negative prompt in the same form, used only at cfg above 1. Empty: the empty prompt, which "
                    "training showed for dropped conditioning (the model samples with cfg 3).")),
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
        for text in (prompt, negative):
            if not isinstance(text, str) or (text is negative and not text.strip()):  # linked, or the empty prompt
                continue
            try:
                tiny_data.parse_prompt(text)
            except tiny_data.PromptSyntaxError as error:
                return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, prompt, negative, batch_size):
        # A replaced weights file (retrained) re-runs the node.
        return tiny_flux_stamp()

    @classmethod
    def execute(cls, prompt, negative="", batch_size=1) -> io.NodeOutput:
        model, meta = load_tiny_flux()
        layout = token_layout(meta)
        positive, negative_cond = tiny_flux_conditioning(prompt, layout), tiny_flux_conditioning(negative, layout)
        latent = tiny_latent("flux", batch=batch_size, height=tiny_data.LATENT, width=tiny_data.LATENT)
        return io.NodeOutput(model, positive, negative_cond, latent, TinyFluxDecoder(model.model.latent_format))
