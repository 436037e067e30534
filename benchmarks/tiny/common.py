"""Shared by the tiny-model scripts: ComfyUI import, architecture, training step, loading weights."""
from __future__ import annotations

from devtools.host import import_comfy, import_pack

from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

import_comfy()
import_pack()

import comfy.model_management  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from comfyui_otcache.demo import tiny_data as data  # noqa: E402
from comfyui_otcache.demo.tiny import (  # noqa: E402,F401
    FAMILIES,
    Family,
    codec_for,
    conditioning,
    empty_latent,
    get_family,
    load_weights,
    sampling_shift,
    set_sampling_shift,
    token_layout,
)
from comfyui_otcache.demo.tiny import WEIGHTS as SHIPPED_WEIGHTS  # noqa: E402,F401
from comfyui_otcache.demo.tiny_models import build_tiny_model  # noqa: E402,F401  (the scripts build through common)

WEIGHTS = HERE / "weights"  # training records: loss curves, sample grids, per-step losses


def training_latents(fam: Family, seed: int, index: int, batch: int, codec) -> tuple[list, torch.Tensor]:
    """Batch ``index`` of data stream ``seed`` as (prompts, internal latents of ``fam``'s layout)."""
    prompts, latents, _ = training_batch(fam, seed, index, batch, codec)
    return prompts, latents


OBJECT_RING = 2  # pixels around each object that count as the object for the loss: its outline


def training_batch(fam: Family, seed: int, index: int, batch: int, codec,
                   object_weight: float = 1.0, data_set: str = data.DATA_SET,
                   ) -> tuple[list, torch.Tensor, torch.Tensor | None]:
    """(prompts, latents, loss weights) of batch ``index`` of data stream ``seed``.

    The weights (``None`` at ``object_weight`` 1) are ``object_weight`` on the latent positions
    that hold an object or its outline (:data:`OBJECT_RING` pixels grown), 1 elsewhere, shaped
    to broadcast over the latent's channels. ``data_set``: ``tiny_data.DATA_SETS``.
    """
    frames = None if (fam.frames or 1) == 1 else fam.frames
    sampled = data.sample_batch(seed, index, batch, frames=frames, masks=object_weight != 1.0,
                                data_set=data_set, clip_size=fam.clip_size)
    prompts, latents = sampled[0], codec.encode(sampled[1])
    if fam.frames == 1:  # single images in a 5-D latent
        latents = latents.unsqueeze(2)
    if object_weight == 1.0:
        return prompts, latents, None
    return prompts, latents, object_loss_weights(sampled[2], latents.shape, object_weight)


def object_loss_weights(masks: torch.Tensor, latent_shape, object_weight: float) -> torch.Tensor:
    """Object masks ``[B, 64, 64]`` or ``[B, T, 64, 64]`` -> loss weights broadcasting over ``latent_shape``
    (``[B, C, h, w]`` or ``[B, C, T, h, w]``): a latent position is the object's when any of its pixels is."""
    from scipy import ndimage

    flat = masks.reshape(-1, *masks.shape[-2:]).numpy()
    grown = np.stack([ndimage.binary_dilation(m, iterations=OBJECT_RING) for m in flat])
    h, w = latent_shape[-2:]
    # "any of its pixels" as a max over each latent position's pixel window (windows overlap by
    # a pixel where 64 is not a multiple of the latent's size, e.g. 48x48 clips' 24)
    pooled = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(grown).float().unsqueeze(1), (h, w))[:, 0]
    weights = 1.0 + (object_weight - 1.0) * pooled
    if len(latent_shape) == 4:
        return weights.reshape(latent_shape[0], 1, h, w)
    return weights.reshape(latent_shape[0], 1, -1, h, w).expand(-1, -1, latent_shape[2], -1, -1)


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
                  sigma: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow loss through ComfyUI's own ``BaseModel.apply_model``.

    ``x_t = sigma * noise + (1 - sigma) * x0``; apply_model returns the denoised
    ``x_t - sigma * v`` (CONST model sampling), so ``v = (x_t - denoised) / sigma``,
    regressed on ``noise - x0``. ComfyUI's FLUX blocks add residuals in place
    (``img += ...``) onto tensors autograd saved; packing saved tensors as copies
    (``saved_tensors_hooks``) makes backprop correct without touching the model's code.
    ``weights`` (broadcasting over the latent) make it a weighted mean of the squared errors.
    """
    s = sigma.view(-1, *[1] * (x0.ndim - 1))
    xt = s * noise + (1 - s) * x0
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        denoised = model.model.apply_model(xt, sigma, c_crossattn=context)
    v = (xt - denoised) / s
    if weights is None:
        return torch.nn.functional.mse_loss(v.float(), (noise - x0).float())
    weights = weights.expand_as(v)
    return (weights * (v.float() - (noise - x0).float()) ** 2).sum() / weights.sum()


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


def load_trained(family: str = "flux", path: Path | None = None, shift: float | None = None):
    """A ComfyUI ModelPatcher of the trained tiny model (float32), and its metadata (``demo.tiny.load_weights``).

    ``shift`` overrides the sampling shift the weights record (``sampling_shift`` in the returned metadata).
    It is set in place on the model ``load_weights`` caches per file, so it holds for the rest of
    the process: for scripts that check one model at one shift.
    """
    model, meta = load_weights(family, path)
    if shift is not None:
        set_sampling_shift(model, shift)
        meta = {**meta, "sampling_shift": str(shift)}
    return model, meta
