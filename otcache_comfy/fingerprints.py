"""Fingerprints: id-independent hashes of what a measurement depends on.

A calibration file, an anchor study and a saved result are found again by what they were
made for: the model (class, sampled weights, patches, wrappers), the sampling settings,
both conditionings and the latent. Object identity plays no part, so a fingerprint is
stable across ComfyUI restarts and machines with the same weights.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:
    from .calibration import SamplingSetup


def _hash_tensor(h, t: Any, max_elements: int | None = None) -> None:
    if getattr(t, "is_nested", False) and hasattr(t, "unbind"):
        for part in t.unbind():
            _hash_tensor(h, part, max_elements)
        return
    h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
    try:
        flat = t.detach().reshape(-1)
        if max_elements is not None and flat.numel() > max_elements:
            flat = flat[:: math.ceil(flat.numel() / max_elements)]
        h.update(flat.to("cpu", torch.float32).contiguous().numpy().tobytes())
    except Exception:  # quantized or otherwise unreadable weights: shape and dtype only
        h.update(b"?")


def _hash_value(h, value: Any, depth: int = 0) -> None:
    if isinstance(value, torch.Tensor) or getattr(value, "is_nested", False):
        _hash_tensor(h, value, 1 << 20)
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=str):
            h.update(str(key).encode())
            _hash_value(h, value[key], depth + 1)
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _hash_value(h, item, depth + 1)
        h.update(b"]")
    elif value is None or isinstance(value, (bool, int, float, str)):
        h.update(repr(value).encode())
    else:  # control nets, hooks, ...: their type and their tensors, one level deep
        h.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())
        if depth < 3:
            for key, item in sorted(getattr(value, "__dict__", {}).items()):
                if isinstance(item, torch.Tensor):
                    h.update(key.encode())
                    _hash_tensor(h, item, 1 << 16)


def _hash_patch_data(h, data: Any, depth: int = 0) -> None:
    """LoRA and other weight patches: their types and a sample of their tensors."""
    h.update(type(data).__qualname__.encode())
    if isinstance(data, torch.Tensor):
        _hash_tensor(h, data, 1024)
    elif isinstance(data, (list, tuple)) and depth < 3:
        for item in data:
            _hash_patch_data(h, item, depth + 1)
    elif hasattr(data, "weights") and depth < 3:  # comfy.weight_adapter adapters
        _hash_patch_data(h, data.weights, depth + 1)
    elif isinstance(data, (int, float, str)) or data is None:
        h.update(repr(data).encode())


def _callable_name(f: Any) -> str:
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__qualname__)}"


def model_fingerprint(model) -> str:
    """An id-independent hash of a ModelPatcher: class, sampled weights, patches, wrappers."""
    h = hashlib.sha256()
    diffusion_model = model.get_model_object("diffusion_model")
    h.update(type(model.model).__qualname__.encode())
    h.update(type(diffusion_model).__qualname__.encode())
    state = diffusion_model.state_dict()
    names = sorted(state)
    picks = sorted({names[round(k * (len(names) - 1) / 7)] for k in range(8)}) if names else []
    backup = getattr(model, "backup", {}) or {}
    for name in picks:
        h.update(name.encode())
        # A loaded model holds its patches (LoRAs) merged into the weights; hash the original
        # weight (kept in the patcher's backup), the patches are hashed below.
        saved = backup.get(f"diffusion_model.{name}")
        _hash_tensor(h, saved.weight if saved is not None else state[name], 4096)
    h.update(f"params={sum(int(t.numel()) for t in state.values())}".encode())
    for key in sorted(getattr(model, "patches", {})):
        h.update(f"patch:{key}".encode())
        for patch in model.patches[key]:
            # (strength_patch, data, strength_model, offset, function)
            h.update(repr([p for k, p in enumerate(patch) if k != 1 and isinstance(p, (int, float, str, tuple, type(None)))]).encode())
            _hash_patch_data(h, patch[1] if len(patch) > 1 else None)
    for key in sorted(getattr(model, "object_patches", {})):
        h.update(f"object:{key}:{type(model.object_patches[key]).__qualname__}".encode())
    options = model.model_options
    to = options.get("transformer_options", {})
    for name in sorted(to.get("patches", {})):
        h.update(f"tp:{name}:{[_callable_name(f) for f in to['patches'][name]]}".encode())
    for name, patches in sorted(to.get("patches_replace", {}).items()):
        h.update(f"tr:{name}:{sorted(map(str, patches))}".encode())
    for kind, by_key in sorted(to.get("wrappers", {}).items()):
        h.update(f"tw:{kind}:{sorted(by_key)}".encode())
    for name in ("model_function_wrapper", "sampler_cfg_function"):
        if options.get(name) is not None:
            h.update(f"{name}:{_callable_name(options[name])}".encode())
    for name in ("sampler_post_cfg_function", "sampler_pre_cfg_function"):
        h.update(f"{name}:{[_callable_name(f) for f in options.get(name, [])]}".encode())
    return h.hexdigest()


def setup_fingerprint(setup: "SamplingSetup", seeds: Sequence[int], reuse: str = "auto") -> str:
    """sha256 (hex) of everything a measurement on ``setup`` depends on, for these seeds and reuse mode.

    Model (:func:`model_fingerprint`), sampler, scheduler, steps, cfg, the sigmas, both
    conditionings, the latent (content, noise mask, batch index), the seeds and the reuse
    mode. Object identity plays no part, so it is stable across ComfyUI restarts.
    """
    h = hashlib.sha256()
    h.update(json.dumps({
        "format": "otcache.setup", "version": 1, "model": model_fingerprint(setup.model),
        "sampler": setup.sampler_name, "scheduler": setup.scheduler, "steps": setup.steps,
        "cfg": float(setup.cfg), "seeds": [int(s) for s in seeds], "reuse": reuse,
    }, sort_keys=True).encode())
    _hash_tensor(h, setup.sigmas)
    for name, cond in (("positive", setup.positive), ("negative", setup.negative)):
        h.update(name.encode())
        _hash_value(h, cond)
    h.update(b"latent")
    _hash_tensor(h, setup.latent_image, 1 << 22)
    for name in ("noise_mask", "batch_index"):
        h.update(name.encode())
        _hash_value(h, setup.latent.get(name))
    return h.hexdigest()


def conditioning_fingerprint(positive, negative) -> str:
    """sha256 (hex, 16 chars) of both conditionings: tells a saved result whether it was made for this prompt."""
    h = hashlib.sha256()
    for name, cond in (("positive", positive), ("negative", negative)):
        h.update(name.encode())
        _hash_value(h, cond)
    return h.hexdigest()[:16]
