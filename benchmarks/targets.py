"""What the comparison benchmark samples: a "bench target" (model, prompts, latent, decoder, sampler).

One code path for the tiny trained models of ``benchmarks/tiny`` and for real checkpoints:
``run.py`` only sees a :class:`BenchTarget`.

- :func:`tiny_target`: a trained tiny FLUX / Qwen-Image / HunyuanVideo from
  ``demo/weights/<family>.safetensors`` (``common.load_trained``), its prompt
  embedding (``common.conditioning``), empty latent and fixed decoder (``common.codec_for``,
  which stands in for the VAE). ``random_weights=True`` builds the same architecture with
  seeded random weights instead (smoke tests only: the numbers mean nothing).
- :func:`real_target`: a diffusion model, text encoder(s) and VAE loaded from files with
  ComfyUI's own loader functions (``comfy.sd.load_diffusion_model`` as UNETLoader,
  ``comfy.sd.load_clip`` as CLIPLoader/DualCLIPLoader, ``comfy.sd.VAE`` as VAELoader) and
  prompts encoded as CLIPTextEncode does; the empty latent as EmptySD3LatentImage (FLUX,
  Qwen-Image) or EmptyHunyuanLatentVideo (HunyuanVideo) makes it.

Calibration and evaluation prompts are disjoint; seeds are fixed per prompt (see
:func:`prompt_seeds`), and no evaluation prompt or seed is ever used for calibration.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = HERE / "tiny"

# Prompt seeds: calibration prompt p uses CAL_SEED + 100 p (+ s for its s-th seed); evaluation
# prompt k uses EVAL_SEED + k. Disjoint ranges, so no evaluation noise was calibrated on.
CAL_SEED = 1000
EVAL_SEED = 5000
# The tiny prompts: calibration and evaluation draw from two streams of held-out prompts
# (nodes/tiny_data.held_out_prompts: prompts no training saw); an evaluation prompt whose
# text equals a calibration prompt is dropped.
CAL_PROMPT_STREAM = 424_242
EVAL_PROMPT_STREAM = 999_999

# Which published (LeMiCa) presets belong to a model family.
PRESET_FAMILY = {"flux": "flux1-dev", "qwen_image": "qwen-image", "hunyuan_video": "hunyuanvideo-1.5"}
CLIP_TYPES = tuple(PRESET_FAMILY)
TINY_FAMILIES = ("flux", "qwen_image", "hunyuan_video")
# ComfyUI's usual guidance for the guidance-distilled models (FluxGuidance node); None: not used.
DEFAULT_GUIDANCE = {"flux": 3.5, "qwen_image": None, "hunyuan_video": 6.0}


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked (missing files, bad options); the message says why."""


@dataclasses.dataclass
class BenchTarget:
    """Everything a KSampler run of one model needs except the step count and the seed."""

    name: str  # label in the tables ("flux", or the diffusion model's file name)
    family: str  # flux | qwen_image | hunyuan_video: picks the published presets
    model: Any  # ComfyUI ModelPatcher, uncached
    decoder: Any  # .decode(samples) -> IMAGE [B, H, W, 3] or video [B, T, H, W, 3], in [0, 1]
    latent: dict  # LATENT dict of one image / clip (batch 1)
    sampler: str
    scheduler: str
    cfg: float
    cal_prompts: list[str]  # prompt texts, for the report
    cal_conds: list[tuple[list, list]]  # (positive, negative) CONDITIONING per calibration prompt
    eval_prompts: list[str]
    eval_conds: list[tuple[list, list]]
    info: dict = dataclasses.field(default_factory=dict)  # what was loaded, for the report

    @property
    def preset_family(self) -> str:
        return PRESET_FAMILY.get(self.family, self.family)

    def frames(self, samples):
        """Decoded frames ``[F, H, W, 3]`` of one sample (an image is one frame)."""
        images = self.decoder.decode(samples)
        if images.ndim == 5:  # video VAEs: [B, T, H, W, 3]
            images = images.reshape(-1, *images.shape[2:])
        return images.float().cpu()


def prompt_seeds(cal_prompts: int, cal_seeds: int, eval_prompts: int) -> tuple[list[int], list[int]]:
    """First seed of each calibration prompt (its seeds are seed, seed+1, ...), and each evaluation prompt's seed."""
    if cal_seeds > 100:
        raise BenchError("at most 100 calibration seeds per prompt (the seed ranges of two prompts would overlap)")
    return [CAL_SEED + 100 * p for p in range(cal_prompts)], [EVAL_SEED + k for k in range(eval_prompts)]


# ----------------------------------------------------------------- tiny models


def _tiny_common():
    from benchmarks.tiny import common  # imports ComfyUI and the pack (as comfyui_otcache)

    return common


def tiny_prompts(common, cal_count: int, eval_count: int) -> tuple[list, list]:
    """Calibration prompts (``load_tiny``'s calibration split) and disjoint held-out evaluation prompts."""
    from comfyui_otcache.demo.tiny import split_prompts

    data = common.data
    cal = split_prompts("calibration", cal_count)
    taken = {p.text() for p in cal}
    pool = data.held_out_prompts(eval_count + cal_count + 16, seed=EVAL_PROMPT_STREAM)
    evaluation = [p for p in pool if p.text() not in taken][:eval_count]
    if len(evaluation) < eval_count:
        raise BenchError("could not draw enough evaluation prompts disjoint from the calibration prompts")
    return cal, evaluation


def tiny_target(family: str, cal_prompts: int, eval_prompts: int, *, random_weights: bool = False,
                latent_size: int | None = None, weights: Path | None = None) -> BenchTarget:
    """A trained tiny model of ``family`` (euler / simple / the cfg it was trained for, negative = the empty prompt)."""
    common = _tiny_common()
    import torch

    if family not in TINY_FAMILIES:
        raise BenchError(f"unknown tiny model {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    fam = common.get_family(family)
    path = Path(weights) if weights else common.SHIPPED_WEIGHTS / f"{family}.safetensors"
    if random_weights:
        model = common.build_tiny_model(family, 0, **fam.arch)
        info = {"weights": "random (seed 0): smoke test only, the numbers mean nothing"}
    else:
        if not path.is_file():
            raise BenchError(
                f"tiny {family} weights not found: {path}. Train them with "
                f"`.venv/bin/python benchmarks/tiny/train.py --family {family}` (see benchmarks/tiny/README.md), "
                "or pass --random-weights for a smoke run whose numbers mean nothing.")
        model, meta = common.load_trained(family, path)
        info = {"weights": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                "train_steps": meta.get("steps"), "train_seed": meta.get("seed"),
                "sampling_shift": meta.get("sampling_shift", "default")}
    cfg = float(meta.get("cfg", 1.0)) if not random_weights else 1.0
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    info.update({"parameters": int(params), "architecture": type(model.model.diffusion_model).__name__})
    latent = common.empty_latent(fam)
    if latent_size is not None:  # a smaller latent for smoke tests (the codec decodes any size)
        shape = list(latent["samples"].shape)
        shape[-2:] = [latent_size, latent_size]
        latent = {"samples": torch.zeros(shape)}
    cal, evaluation = tiny_prompts(common, cal_prompts, eval_prompts)

    layout = common.token_layout(None if random_weights else meta)

    def conds(prompts):
        negative = common.conditioning(fam, [None], layout)  # the empty prompt, as in training's dropout
        return [(common.conditioning(fam, [p], layout), negative) for p in prompts]

    info["latent"] = list(latent["samples"].shape)
    return BenchTarget(
        name=family, family=family, model=model, decoder=common.codec_for(model), latent=latent,
        sampler="euler", scheduler="simple", cfg=cfg,
        cal_prompts=[p.text() for p in cal], cal_conds=conds(cal),
        eval_prompts=[p.text() for p in evaluation], eval_conds=conds(evaluation), info=info)


# ----------------------------------------------------------------- real checkpoints


def read_prompts(path: Path, cal_count: int, eval_count: int) -> tuple[list[str], list[str]]:
    """One prompt per line ('#' comments and blank lines skipped): the first ``cal_count``
    calibrate, the next ``eval_count`` are evaluated."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if len(prompts) < cal_count + eval_count:
        raise BenchError(f"{path} holds {len(prompts)} prompts; --cal-prompts {cal_count} + --eval-prompts "
                         f"{eval_count} need {cal_count + eval_count} (calibration first, then evaluation)")
    cal, evaluation = prompts[:cal_count], prompts[cal_count:cal_count + eval_count]
    overlap = set(cal) & set(evaluation)
    if overlap:
        raise BenchError(f"{path}: evaluation prompts repeat calibration prompts: {sorted(overlap)[:3]}")
    return cal, evaluation


def _need_file(option: str, path: str | None) -> Path:
    if not path:
        raise BenchError(f"{option} is required for a real checkpoint run")
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchError(f"{option} {path}: file not found")
    return p


def check_real_files(args) -> dict[str, Any]:
    """Every file a real run needs, checked before anything is loaded (clear message on the first missing one)."""
    if args.clip_type not in CLIP_TYPES:
        raise BenchError(f"--clip-type must be one of {', '.join(CLIP_TYPES)}; got {args.clip_type!r}")
    if not args.text_encoder:
        raise BenchError("--text-encoder is required (once per file: FLUX takes clip_l and t5xxl)")
    files = {
        "diffusion_model": _need_file("--diffusion-model", args.diffusion_model),
        "text_encoders": [_need_file("--text-encoder", p) for p in args.text_encoder],
        "vae": _need_file("--vae", args.vae),
        "prompts": _need_file("--prompts", args.prompts),
    }
    if args.width % 16 or args.height % 16:
        raise BenchError(f"--width and --height must be multiples of 16; got {args.width}x{args.height}")
    return files


def _empty_latent(clip_type: str, width: int, height: int, frames: int | None) -> dict:
    import comfy.model_management
    import torch

    device = comfy.model_management.intermediate_device()
    if clip_type == "hunyuan_video":  # EmptyHunyuanLatentVideo
        length = frames or 1
        return {"samples": torch.zeros([1, 16, ((length - 1) // 4) + 1, height // 8, width // 8], device=device)}
    # EmptySD3LatentImage (FLUX.1, Qwen-Image)
    return {"samples": torch.zeros([1, 16, height // 8, width // 8], device=device), "downscale_ratio_spacial": 8}


def real_target(args, cal_count: int, eval_count: int) -> BenchTarget:
    """Load a real checkpoint as ComfyUI's loader nodes do; encode the prompts file."""
    files = check_real_files(args)
    cal, evaluation = read_prompts(files["prompts"], cal_count, eval_count)

    import comfy.sd
    import comfy.utils
    import folder_paths
    import node_helpers
    import torch

    model_options = {}  # UNETLoader's weight_dtype
    if args.weight_dtype in ("fp8_e4m3fn", "fp8_e4m3fn_fast"):
        model_options["dtype"] = torch.float8_e4m3fn
        if args.weight_dtype == "fp8_e4m3fn_fast":
            model_options["fp8_optimizations"] = True
    elif args.weight_dtype == "fp8_e5m2":
        model_options["dtype"] = torch.float8_e5m2
    print(f"loading diffusion model {files['diffusion_model']}", flush=True)
    model = comfy.sd.load_diffusion_model(str(files["diffusion_model"]), model_options=model_options)
    if model is None:
        raise BenchError(f"--diffusion-model {files['diffusion_model']}: ComfyUI did not recognise this model")
    print(f"loading text encoder(s) {', '.join(map(str, files['text_encoders']))}", flush=True)
    clip = comfy.sd.load_clip(ckpt_paths=[str(p) for p in files["text_encoders"]],
                              embedding_directory=folder_paths.get_folder_paths("embeddings"),
                              clip_type=comfy.sd.CLIPType[args.clip_type.upper()])
    print(f"loading VAE {files['vae']}", flush=True)
    sd, metadata = comfy.utils.load_torch_file(str(files["vae"]), return_metadata=True)
    vae = comfy.sd.VAE(sd=sd, metadata=metadata)
    vae.throw_exception_if_invalid()

    guidance = args.guidance if args.guidance is not None else DEFAULT_GUIDANCE[args.clip_type]

    def encode(text: str) -> list:  # CLIPTextEncode (+ FluxGuidance where the model takes guidance)
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        if guidance is not None:
            cond = node_helpers.conditioning_set_values(cond, {"guidance": float(guidance)})
        return cond

    negative = encode(args.negative)
    info = {"diffusion_model": str(files["diffusion_model"]), "text_encoders": [str(p) for p in files["text_encoders"]],
            "vae": str(files["vae"]), "clip_type": args.clip_type, "width": args.width, "height": args.height,
            "frames": args.frames, "guidance": guidance, "negative": args.negative, "weight_dtype": args.weight_dtype,
            "architecture": type(model.model.diffusion_model).__name__}
    return BenchTarget(
        name=files["diffusion_model"].name, family=args.clip_type, model=model, decoder=vae,
        latent=_empty_latent(args.clip_type, args.width, args.height, args.frames),
        sampler=args.sampler, scheduler=args.scheduler, cfg=float(args.cfg),
        cal_prompts=cal, cal_conds=[(encode(p), negative) for p in cal],
        eval_prompts=evaluation, eval_conds=[(encode(p), negative) for p in evaluation], info=info)


def make_targets(args, cal_count: int, eval_count: int) -> list[Callable[[], BenchTarget]]:
    """Factories (loaded one at a time, so two real models never sit in memory together)."""
    if args.diffusion_model or args.text_encoder or args.vae or args.prompts:
        check_real_files(args)  # fail before any work
        return [lambda: real_target(args, cal_count, eval_count)]
    return [
        (lambda family=family: tiny_target(family, cal_count, eval_count, random_weights=args.random_weights,
                                           latent_size=args.tiny_latent,
                                           weights=Path(args.tiny_weights_dir) / f"{family}.safetensors"))
        for family in args.models
    ]
