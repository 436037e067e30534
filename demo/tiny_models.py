"""Tiny real ComfyUI diffusion models, for tests, benchmarks and the demo.

Each is built from the real ``comfy.supported_models`` config class, so ComfyUI's own
model classes, sampling path and patch points run unchanged; only the sizes are small.
``comfy.ops`` skips weight initialisation, so weights are set here, deterministically
from a seed.
"""
from __future__ import annotations

import dataclasses
import math

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import torch


@dataclasses.dataclass(frozen=True)
class TinySpec:
    config_class: type
    unet_config: dict
    latent_channels: int
    video: bool  # latent is [B, C, T, H, W]
    context_dim: int


TINY_SPECS: dict[str, TinySpec] = {
    "flux": TinySpec(
        comfy.supported_models.Flux,
        {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": None,
         "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
         "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2,
         "qkv_bias": True, "guidance_embed": False, "txt_ids_dims": []},
        16, False, 32),
    "qwen_image": TinySpec(
        comfy.supported_models.QwenImage,
        {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
         "num_layers": 3, "attention_head_dim": 16, "num_attention_heads": 2,
         "joint_attention_dim": 32, "axes_dims_rope": (4, 6, 6)},
        16, True, 32),
    "hunyuan_video": TinySpec(
        comfy.supported_models.HunyuanVideo,
        {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": None,
         "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
         "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2],
         "qkv_bias": True, "guidance_embed": False, "byt5": False, "meanflow": False,
         "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False},
        16, True, 32),
    # Wan 2.1 (t2v); block mode replaces its blocks (the generic modes are tested on it too).
    "wan21": TinySpec(
        comfy.supported_models.WAN21_T2V,
        {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 16,
         "in_dim": 16, "dim": 64, "ffn_dim": 128, "freq_dim": 32, "text_dim": 32, "out_dim": 16,
         "num_heads": 2, "num_layers": 2},
        16, True, 32),
    # Chroma: FLUX-like double + single blocks without per-block modulation (a distilled approximator).
    "chroma": TinySpec(
        comfy.supported_models.Chroma,
        {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 32, "hidden_size": 64,
         "mlp_ratio": 2.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "axes_dim": [8, 12, 12],
         "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 128,
         "n_layers": 2, "txt_ids_dims": [], "vec_in_dim": None},
        16, False, 32),
    # LTX-Video: 128-channel video latents, transformer blocks with cross-attention (needs an attention mask).
    "ltxv": TinySpec(
        comfy.supported_models.LTXV,
        {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
         "num_attention_heads": 2, "caption_channels": 32, "num_layers": 2},
        128, True, 32),
}

FAMILIES = tuple(TINY_SPECS)


def _init_weights(module: torch.nn.Module, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / math.sqrt(fan_in)))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:  # norm scales
                p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))


def build_tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                     scale: float = 1.0, **overrides) -> comfy.model_patcher.ModelPatcher:
    """A real ComfyUI ModelPatcher around a tiny ``family`` model on the torch device ComfyUI uses."""
    if family not in TINY_SPECS:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")
    spec = TINY_SPECS[family]
    config = spec.config_class({**spec.unet_config, **overrides})
    config.set_inference_dtype(dtype, None)
    device = comfy.model_management.get_torch_device()
    base = config.get_model({}, device=device)
    _init_weights(base.diffusion_model, seed, scale)
    base.diffusion_model.to(device=device, dtype=dtype)
    return comfy.model_patcher.ModelPatcher(base, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def tiny_conditioning(family: str, seed: int, tokens: int = 8, batch: int = 1) -> list:
    """ComfyUI CONDITIONING (``[[tensor, options]]``) with random text embeddings."""
    gen = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, TINY_SPECS[family].context_dim, generator=gen)
    options = {}
    if family == "hunyuan_video":  # its BaseModel requires a pooled vector (unused with vec_in_dim=None)
        options["pooled_output"] = torch.randn(batch, 32, generator=gen)
    if family == "ltxv":  # its forward takes the text attention mask
        options["attention_mask"] = torch.ones(batch, tokens)
    return [[context, options]]


def tiny_latent(family: str, batch: int = 1, height: int = 8, width: int = 8, frames: int = 1) -> dict:
    """An empty LATENT dict of the right layout for ``family`` (zeros, as EmptyLatentImage)."""
    spec = TINY_SPECS[family]
    if spec.video:
        samples = torch.zeros(batch, spec.latent_channels, frames, height, width)
    else:
        samples = torch.zeros(batch, spec.latent_channels, height, width)
    return {"samples": samples}


class LatentRGBDecoder:
    """A fixed decoder from latent to RGB, standing in for a VAE with tiny models.

    Each latent pixel becomes an 8x8 block whose colour is ``sigmoid(P z)``, with ``P`` a
    seeded 3 x C projection: deterministic, smooth in the latent, and cheap. It has the
    one method ComfyUI's VAEDecode calls: ``decode(samples) -> [B, H, W, 3]`` (videos
    ``[B, T, H, W, 3]``), values in [0, 1].
    """

    upscale = 8

    def __init__(self, channels: int = 16, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(3, channels, generator=gen) / math.sqrt(channels)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        z = samples.float().cpu()
        rgb = torch.sigmoid(torch.einsum("oc,bc...->bo...", self.projection, z))
        if rgb.ndim == 5:  # [B, 3, T, H, W] -> [B, T, H, W, 3]
            rgb = rgb.repeat_interleave(self.upscale, -1).repeat_interleave(self.upscale, -2)
            return rgb.permute(0, 2, 3, 4, 1).contiguous()
        rgb = rgb.repeat_interleave(self.upscale, -1).repeat_interleave(self.upscale, -2)
        return rgb.permute(0, 2, 3, 1).contiguous()
