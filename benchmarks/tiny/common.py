"""Shared by the tiny-model scripts: ComfyUI import, architecture, training step, loading weights."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from host import import_comfy, import_pack  # noqa: E402

import_comfy()
import_pack()

import torch  # noqa: E402

import comfy.model_management  # noqa: E402

from comfyui_otcache.demo.tiny_models import build_tiny_model  # noqa: E402

from comfyui_otcache.demo import tiny_data as data  # noqa: E402

WEIGHTS = HERE / "weights"

# A tiny FLUX: 128 hidden, 4 heads of 32 (RoPE axes 8+12+12), 4 double + 4 single blocks.
FLUX_ARCH = {"hidden_size": 128, "num_heads": 4, "axes_dim": [8, 12, 12], "depth": 4,
             "depth_single_blocks": 4, "mlp_ratio": 2.0, "context_in_dim": data.CONTEXT_DIM}
# A tiny Qwen-Image: 8 double-stream layers, 4 heads of 32 (RoPE axes 8+12+12).
QWEN_ARCH = {"num_layers": 8, "attention_head_dim": 32, "num_attention_heads": 4,
             "joint_attention_dim": data.CONTEXT_DIM, "axes_dims_rope": [8, 12, 12]}
# A tiny HunyuanVideo: FLUX's sizes with 3-D patches (1x2x2) and RoPE over (t, h, w).
HUNYUAN_ARCH = {**FLUX_ARCH, "theta": 256, "patch_size": [1, 2, 2]}


@dataclasses.dataclass(frozen=True)
class Family:
    """How one architecture meets the data set: its config, and its latent's layout."""

    name: str
    arch: dict
    frames: int | None  # None: image latent [B, 16, 32, 32]; else [B, 16, frames, h, w]
    latent_hw: int  # latent height = width
    # Share of training samples whose sigma is drawn uniformly in (0, 1) instead of through
    # the model's shift (see training_sigmas).
    uniform_sigma_share: float = 0.25
    train_steps: int = 4000  # train.py's defaults: the committed weights' settings
    train_threads: int = 2
    train_batch: int = 12
    cond_dropout: float = 0.1  # share of training samples shown the empty prompt (for cfg)
    cfg: float = 3.0  # the cfg the models sample with

    def latent_shape(self, batch: int = 1) -> tuple:
        if self.frames is None:
            return (batch, data.CHANNELS, self.latent_hw, self.latent_hw)
        return (batch, data.CHANNELS, self.frames, self.latent_hw, self.latent_hw)


FAMILIES = {
    "flux": Family("flux", FLUX_ARCH, None, data.LATENT),
    # Qwen-Image latents are 5-D with one frame (Wan 2.1 latent format).
    "qwen_image": Family("qwen_image", QWEN_ARCH, 1, data.LATENT),
    # 4 frames of 32x32 pixels: 4 x 8 x 8 = 256 tokens, as the image models.
    # Its shift 7 puts only 3.4% of shifted samples below sigma 0.2 (FLUX: 7%), so half
    # the batch is drawn uniformly in sigma to teach it the last steps too.
    "hunyuan_video": Family("hunyuan_video", HUNYUAN_ARCH, data.CLIP_FRAMES, data.LATENT // 2,
                            uniform_sigma_share=0.5),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def training_latents(fam: Family, seed: int, index: int, batch: int, codec) -> tuple[list, torch.Tensor]:
    """Batch ``index`` of data stream ``seed`` as (prompts, internal latents of ``fam``'s layout)."""
    if fam.frames is None:
        prompts, images = data.sample_batch(seed, index, batch)
        return prompts, codec.encode(images)
    if fam.frames == 1:  # single images in a 5-D latent
        prompts, images = data.sample_batch(seed, index, batch)
        return prompts, codec.encode(images).unsqueeze(2)
    prompts, clips = data.sample_batch(seed, index, batch, frames=fam.frames)
    return prompts, codec.encode(clips)


def conditioning(fam: Family, prompts) -> list:
    """ComfyUI CONDITIONING for a batch of prompts (HunyuanVideo's BaseModel wants a pooled vector)."""
    context = data.PromptEncoder().batch(list(prompts))
    options = {}
    if fam.name == "hunyuan_video":  # required by its BaseModel, unused with vec_in_dim=None
        options["pooled_output"] = torch.zeros(context.shape[0], data.CONTEXT_DIM)
    return [[context, options]]


def empty_latent(fam: Family, batch: int = 1) -> dict:
    return {"samples": torch.zeros(fam.latent_shape(batch))}


def codec_for(model) -> "data.PatchCodec":
    """The fixed decoder, reading the KSampler's latents in ``model``'s own latent format."""
    return data.PatchCodec(latent_format=model.model.latent_format)


def set_training(model, on: bool) -> None:
    """Unfreeze (ComfyUI loads diffusion models frozen) and use the differentiable RoPE."""
    dm = model.model.diffusion_model
    dm.requires_grad_(on)
    dm.train(on)
    comfy.model_management.in_training = on


def _pack(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def velocity_loss(model, x0: torch.Tensor, context: torch.Tensor, noise: torch.Tensor,
                  sigma: torch.Tensor) -> torch.Tensor:
    """Rectified-flow loss through ComfyUI's own ``BaseModel.apply_model``.

    ``x_t = sigma * noise + (1 - sigma) * x0``; apply_model returns the denoised
    ``x_t - sigma * v`` (CONST model sampling), so ``v = (x_t - denoised) / sigma``,
    regressed on ``noise - x0``. ComfyUI's FLUX blocks add residuals in place
    (``img += ...``) onto tensors autograd saved; packing saved tensors as copies
    (``saved_tensors_hooks``) makes backprop correct without touching the model's code.
    """
    s = sigma.view(-1, *[1] * (x0.ndim - 1))
    xt = s * noise + (1 - s) * x0
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        denoised = model.model.apply_model(xt, sigma, c_crossattn=context)
    v = (xt - denoised) / s
    return torch.nn.functional.mse_loss(v.float(), (noise - x0).float())


def shifted_sigmas(model, u: torch.Tensor) -> torch.Tensor:
    """Map t in (0, 1) through the model's own time shift (its model_sampling's ``sigma``).

    ``sigma()`` takes the model's own timestep scale: [0, 1] for FLUX and Qwen-Image
    (ModelSamplingFlux), [0, 1000] for HunyuanVideo (ModelSamplingDiscreteFlow, multiplier
    1000). ``timestep(1.0)`` is that scale's top.
    """
    sampling = model.model.model_sampling
    top = float(sampling.timestep(torch.tensor(1.0)))
    return sampling.sigma(u * top)


def training_sigmas(model, fam: Family, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Training noise levels: t uniform through the model's own shift, so training density
    follows where the shifted ``simple`` scheduler evaluates; the first
    ``round(fam.uniform_sigma_share * batch)`` samples take sigma uniform in (0, 1) instead,
    for models whose shift leaves the last steps almost untrained.
    """
    u = torch.rand(batch, generator=gen)
    sigma = shifted_sigmas(model, u)
    k = round(fam.uniform_sigma_share * batch)
    sigma[:k] = u[:k]
    return sigma.clamp(1e-3, 1.0)


def load_trained(family: str = "flux", path: Path | None = None):
    """A ComfyUI ModelPatcher of the trained tiny model (float32), and its metadata."""
    from safetensors.torch import load_file, safe_open

    path = Path(path or WEIGHTS / f"{family}.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    arch = json.loads(meta["arch"]) if "arch" in meta else FAMILIES[family].arch
    model = build_tiny_model(family, 0, **arch)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.model.diffusion_model.load_state_dict(state)
    return model, meta
