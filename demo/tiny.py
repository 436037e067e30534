"""``load_tiny(family)``: the one way the demo, the tests and the benchmarks get a trained tiny model.

Each family is ComfyUI's own model class at a tiny size (:mod:`.tiny_models`), trained on
the procedural data set (:mod:`.tiny_data`) by ``benchmarks/tiny/train.py``; its bf16
weights ship in ``demo/weights/<family>.safetensors`` with the architecture in their
metadata. :class:`TinyModel` bundles what a KSampler needs around it: prompt encoding,
the empty latent of the family's layout, the fixed decoder, the cfg it samples with,
and its prompts by split (training, calibration, held out: three streams that never meet).
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import numpy as np
import torch

from . import tiny_data as data
from .tiny_models import build_tiny_model

WEIGHTS = Path(__file__).resolve().parent / "weights"
SPLITS = ("train", "calibration", "heldout")
CALIBRATION_STREAM = (424_242, 3, 3)  # a 3-part key: training batches use 2-part keys [seed, index]


@dataclasses.dataclass(frozen=True)
class Family:
    """How one architecture meets the data set: its config, and its latent's layout."""

    name: str
    arch: dict
    frames: int | None  # None: image latent [B, 16, 32, 32]; else [B, 16, frames, h, w]
    latent_hw: int  # latent height = width
    # Share of training samples whose sigma is drawn uniformly in (0, 1) instead of through
    # the model's shift (benchmarks/tiny/common.training_sigmas).
    uniform_sigma_share: float = 0.25
    train_steps: int = 3000  # train.py's defaults: the shipped weights' settings
    train_threads: int = 1
    train_batch: int = 12
    cond_dropout: float = 0.1  # share of training samples shown the empty prompt (for cfg)
    cfg: float = 3.0  # the cfg the models sample with
    # The model-sampling shift the model samples with (None: its architecture's default),
    # written to the weights' metadata by train.py (:func:`sampling_shift`).
    sampling_shift: float | None = None
    shipped: bool = True  # weights in demo/weights (else train.py writes them; load_tiny says how)

    @property
    def clip_size(self) -> int:
        """A clip frame's pixels (video families): the latent's, decoded."""
        return self.latent_hw * data.PATCH

    def latent_shape(self, batch: int = 1) -> tuple:
        if self.frames is None:
            return (batch, data.CHANNELS, self.latent_hw, self.latent_hw)
        return (batch, data.CHANNELS, self.frames, self.latent_hw, self.latent_hw)


# A tiny FLUX: 128 hidden, 4 heads of 32 (RoPE axes 8+12+12), 4 double + 4 single blocks.
FLUX_ARCH = {"hidden_size": 128, "num_heads": 4, "axes_dim": [8, 12, 12], "depth": 4,
             "depth_single_blocks": 4, "mlp_ratio": 2.0, "context_in_dim": data.CONTEXT_DIM}
# A tiny Qwen-Image: 8 double-stream layers, 4 heads of 32 (RoPE axes 8+12+12).
QWEN_ARCH = {"num_layers": 8, "attention_head_dim": 32, "num_attention_heads": 4,
             "joint_attention_dim": data.CONTEXT_DIM, "axes_dims_rope": [8, 12, 12]}
# A tiny HunyuanVideo: 128 hidden, 4 heads of 32, 4 double + 4 single blocks, with 3-D patches
# (1x2x2) and RoPE over (t, h, w).
HUNYUAN_ARCH = {"hidden_size": 128, "num_heads": 4, "axes_dim": [8, 12, 12], "depth": 4, "depth_single_blocks": 4,
                "mlp_ratio": 2.0, "context_in_dim": data.CONTEXT_DIM, "theta": 256, "patch_size": [1, 2, 2]}
# A tiny Wan 2.1 T2V: 8 blocks of width 128, 2 heads of 64. Wan fixes RoPE theta at 10,000 and
# splits a head as (d - 4 (d // 6), 2 (d // 6), 2 (d // 6)): with heads of 64 each image axis
# gets 20 dimensions, whose 10 frequencies still tell 16 token positions apart.
WAN_ARCH = {"model_type": "t2v", "patch_size": [1, 2, 2], "text_len": 8, "in_dim": data.CHANNELS, "dim": 128,
            "ffn_dim": 256, "freq_dim": 64, "text_dim": data.CONTEXT_DIM, "out_dim": data.CHANNELS,
            "num_heads": 2, "num_layers": 8}

# FLUX and Qwen-Image shift their noise schedule by the image's token count (ComfyUI's
# ModelSamplingFlux, diffusers' dynamic shifting): mu = 0.5 at 256 tokens, rising to 1.15 at
# 4096 (1024x1024). The architecture's default, 1.15, is the large-image value; on the tiny
# models' 256 tokens it spends the first steps at noise levels where nothing is decided yet,
# so a trained tiny FLUX commits to its image only in steps 1-3 (not 0-1), and the
# published (front-loaded) schedules lose to uniform. At FLUX's own 256-token value they win
# (benchmarks/tiny/README.md). Training still draws its noise levels through the default.
IMAGE_MU_256_TOKENS = 0.5
# HunyuanVideo's shift 7 (SD3-style) is for tens of thousands of tokens (720p clips); its 256
# tokens get the image models' 256-token value, exp(0.5) = 1.65 in SD3 form.
VIDEO_SHIFT_256_TOKENS = 1.65  # (at 288 tokens FLUX's rule gives mu 0.505: the same shift to 0.01)

FAMILIES = {
    "flux": Family("flux", FLUX_ARCH, None, data.LATENT, train_steps=6000, train_threads=2,
                   sampling_shift=IMAGE_MU_256_TOKENS),
    # Qwen-Image latents are 5-D with one frame (Wan 2.1 latent format).
    "qwen_image": Family("qwen_image", QWEN_ARCH, 1, data.LATENT, train_steps=6000, train_threads=2,
                         sampling_shift=IMAGE_MU_256_TOKENS),
    # 2 frames of 48x48 pixels: 2 x 12 x 12 = 288 tokens, so an object is about 4 tokens across
    # (4 frames of 32x32, 256 tokens, shipped until 2026-12-06: under 3 tokens, and that model
    # drew squares and diamonds round; 2 frames of 64x64, 512 tokens, trained 4x slower per step).
    # Its shift 7 puts only 3.4% of shifted samples below sigma 0.2 (FLUX: 7%), so half the
    # batch is drawn uniformly in sigma to teach it the last steps too.
    "hunyuan_video": Family("hunyuan_video", HUNYUAN_ARCH, data.CLIP_FRAMES, data.CLIP_SIZE // data.PATCH,
                            uniform_sigma_share=0.5, train_steps=9000, train_threads=2,
                            sampling_shift=VIDEO_SHIFT_256_TOKENS),
    # Single images in Wan's 5-D latent (as Qwen-Image). Its shift 8 puts few samples at low
    # noise, so half the batch is uniform in sigma (as HunyuanVideo). Trained for issue 17's
    # reuse-mode comparison; not shipped (the 24 MB weight budget is the three target families').
    "wan21": Family("wan21", WAN_ARCH, 1, data.LATENT, uniform_sigma_share=0.5, train_threads=2,
                    train_steps=3000, shipped=False),
}
SHIPPED = tuple(name for name, fam in FAMILIES.items() if fam.shipped)


class TinyWeightsError(RuntimeError):
    """A tiny model's weights file is missing or not what it should be; the message says how to get it."""


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown tiny family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def token_layout(meta: dict | None) -> str:
    """The prompt token layout a model was trained with (its weights' ``prompt_tokens``; before v3: ``slot``)."""
    return (meta or {}).get("prompt_tokens", "slot")


def sampling_shift(meta: dict | None) -> float | None:
    """The model-sampling shift a model samples with (its weights' ``sampling_shift``; absent: the default)."""
    value = (meta or {}).get("sampling_shift")
    return None if value in (None, "", "None") else float(value)


def set_sampling_shift(model, shift: float | None) -> None:
    """Set ``model``'s noise-schedule shift in place (``None``: leave the architecture's default)."""
    if shift is None:
        return
    sampling = model.model.model_sampling
    extra = {"multiplier": sampling.multiplier} if hasattr(sampling, "multiplier") else {}
    sampling.set_parameters(shift=shift, **extra)


def conditioning(fam: Family, prompts, layout: str = "object") -> list:
    """ComfyUI CONDITIONING for a batch of prompts (``None``: the empty prompt, cfg's negative).

    ``layout`` is the model's prompt token layout (:func:`token_layout` of its metadata).
    """
    context = data.PromptEncoder(layout=layout).batch(list(prompts))
    options = {}
    if fam.name == "hunyuan_video":  # required by its BaseModel, unused with vec_in_dim=None
        options["pooled_output"] = torch.zeros(context.shape[0], data.CONTEXT_DIM)
    return [[context, options]]


def empty_latent(fam: Family, batch: int = 1) -> dict:
    return {"samples": torch.zeros(fam.latent_shape(batch))}


def codec_for(model) -> data.PatchCodec:
    """The fixed decoder, reading the KSampler's latents in ``model``'s own latent format."""
    return data.PatchCodec(latent_format=model.model.latent_format)


def weights_path(family: str) -> Path:
    return WEIGHTS / f"{family}.safetensors"


def _missing(path: Path, family: str) -> str:
    if not get_family(family).shipped:
        return (f"the tiny {family} weights {path} are missing; they do not ship with the pack. Train them: "
                f"`.venv/bin/python benchmarks/tiny/train.py --family {family}` (deterministic; about an hour on 2 "
                "CPU cores).")
    return (f"the tiny {family} weights {path} are missing. They ship with the git checkout of ComfyUI-OTCache "
            f"(demo/weights/); get them with a `git clone` of the repository into custom_nodes, or train them: "
            f"`.venv/bin/python benchmarks/tiny/train.py --family {family}` (about an hour on 2 CPU cores).")


def _check_layout(path: Path, family: str, meta: dict) -> None:
    """Refuse weights trained on another latent layout (e.g. a HunyuanVideo of 4 frames of 32x32, before 2026-12-06).

    train.py writes the layout as ``latent``; older files only name a video's frame count in ``data``.
    """
    fam = get_family(family)
    wanted = fam.latent_shape(1)[1:]
    if "latent" in meta:
        mismatch = tuple(json.loads(meta["latent"])) != wanted
    else:
        frames = re.search(r"clips of (\d+) frames", meta.get("data", ""))
        mismatch = frames is not None and int(frames.group(1)) != (fam.frames or 1)
    if mismatch:
        raise TinyWeightsError(
            f"{path} was trained on another latent layout ({meta.get('latent') or meta['data']}) than this pack's "
            f"{family}: {list(wanted)}, {fam.frames or 1} frame(s) of {fam.clip_size} pixels. Use the file that ships "
            f"with this version (demo/weights/) or retrain: `.venv/bin/python benchmarks/tiny/train.py --family {family}`")


_LOADED: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def load_weights(family: str = "flux", path: Path | str | None = None):
    """A ComfyUI ModelPatcher of the trained tiny model (float32) and the file's metadata; cached per file version."""
    get_family(family)
    path = Path(path) if path is not None else weights_path(family)
    if not path.is_file():
        raise TinyWeightsError(_missing(path, family))
    stat = path.stat()
    stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if stamp in _LOADED:
            return _LOADED[stamp]
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                meta = dict(f.metadata() or {})
            state = {k: v.float() for k, v in load_file(str(path)).items()}
        except Exception as error:
            raise TinyWeightsError(f"cannot read {path} as safetensors: {error}") from error
        if meta.get("family", family) != family:
            raise TinyWeightsError(f"{path} holds a {meta['family']!r} model, not {family}")
        if "arch" not in meta:
            raise TinyWeightsError(f"{path} has no 'arch' metadata (the model's sizes as JSON), so the model cannot "
                                   "be built; write it with benchmarks/tiny/train.py")
        _check_layout(path, family, meta)
        arch = json.loads(meta["arch"])
        model = build_tiny_model(family, 0, **arch)
        try:
            model.model.diffusion_model.load_state_dict(state)
        except RuntimeError as error:
            raise TinyWeightsError(f"the weights in {path} do not fit the {family} built from its arch metadata "
                                   f"{arch}: {error}") from error
        set_sampling_shift(model, sampling_shift(meta))
        _LOADED[stamp] = (model, meta)
        return model, meta


@dataclasses.dataclass
class TinyModel:
    """A trained tiny model with everything a KSampler needs around it."""

    family: Family
    model: object  # ModelPatcher
    meta: dict
    cfg: float

    def encode(self, prompts: list[str]) -> list:
        """CONDITIONING of prompt texts (``"<bg> background; <colour> <shape>, ..."``; ``""`` is the empty prompt)."""
        parsed = [None if not text.strip() else data.parse_prompt(text) for text in prompts]
        return conditioning(self.family, parsed, token_layout(self.meta))

    def decode(self, latent) -> torch.Tensor:
        """IMAGE ``[B, H, W, 3]`` in [0, 1] of a LATENT (or its samples); video frames one after another."""
        samples = latent["samples"] if isinstance(latent, dict) else latent
        return codec_for(self.model).decode(samples)

    def empty_latent(self, batch: int = 1) -> dict:
        return empty_latent(self.family, batch)

    def prompts(self, split: str, n: int) -> list[str]:
        """``n`` prompt texts of ``split``: ``train`` (the training stream's first batches), ``calibration``
        or ``heldout`` (streams training never draws; held out is never used for calibration either)."""
        return [p.text() for p in split_prompts(split, n)]


def split_prompts(split: str, n: int) -> list[data.Prompt]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if split == "heldout":
        return data.held_out_prompts(n)
    if split == "calibration":
        rng = np.random.default_rng(list(CALIBRATION_STREAM))
        return [data.random_prompt(rng) for _ in range(n)]
    prompts: list[data.Prompt] = []
    index = 0
    while len(prompts) < n:  # the prompts of training batches 0, 1, ... (stream seed 0)
        batch, _ = data.sample_batch(0, index, 12)
        prompts += batch
        index += 1
    return prompts[:n]


def load_tiny(family: str, path: Path | str | None = None) -> TinyModel:
    """The trained tiny ``family`` (``flux``, ``qwen_image`` or ``hunyuan_video``; ``wan21`` once trained) with its helpers."""
    fam = get_family(family)
    model, meta = load_weights(family, path)
    return TinyModel(fam, model, meta, float(meta.get("cfg", 1.0)))
