"""Shared by the tiny-model scripts: ComfyUI import, architecture, training step, loading weights."""
from __future__ import annotations

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

from comfyui_otcache.nodes.tiny_models import build_tiny_model  # noqa: E402

import data  # noqa: E402

WEIGHTS = HERE / "weights"

# A tiny FLUX: 128 hidden, 4 heads of 32 (RoPE axes 8+12+12), 2 double + 2 single blocks.
FLUX_ARCH = {"hidden_size": 128, "num_heads": 4, "axes_dim": [8, 12, 12], "depth": 2,
             "depth_single_blocks": 2, "mlp_ratio": 2.0, "context_in_dim": data.CONTEXT_DIM}


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
    s = sigma.view(-1, 1, 1, 1)
    xt = s * noise + (1 - s) * x0
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        denoised = model.model.apply_model(xt, sigma, c_crossattn=context)
    v = (xt - denoised) / s
    return torch.nn.functional.mse_loss(v.float(), (noise - x0).float())


def flux_sigmas(model, u: torch.Tensor) -> torch.Tensor:
    """Map t in (0, 1) through the model's own time shift (ModelSamplingFlux.sigma)."""
    return model.model.model_sampling.sigma(u)


def load_trained(family: str = "flux", path: Path | None = None):
    """A ComfyUI ModelPatcher of the trained tiny model (float32), and its metadata."""
    from safetensors.torch import load_file, safe_open

    path = Path(path or WEIGHTS / f"{family}.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    arch = json.loads(meta["arch"]) if "arch" in meta else FLUX_ARCH
    model = build_tiny_model(family, 0, **arch)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.model.diffusion_model.load_state_dict(state)
    return model, meta
