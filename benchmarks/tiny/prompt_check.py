"""Does a trained tiny model draw what it is told? Full-compute samples of held-out prompts, checked automatically.

For ``--prompts`` held-out prompts (``load_tiny``'s held-out split: no training or
calibration saw them), one sample each (euler / simple / 28 steps / the model's own cfg,
negative = the empty prompt, seed 7000 + k), decoded with the fixed codec and read by
``demo/prompt_check.py`` (background kind by a small CNN, each named object against the
renderer's own shape masks). Reported: the share of samples showing everything the prompt
names; the share of each part present (``check_components``: background kind, colour, object
in some shape, object as named); per named shape, which shapes are found in the object's colour
(``shape_confusion``); the same for true renders of the same prompts (the check's
own ceiling); and a grid with a green or red frame per sample. A video model's sample is its
first frame, or with ``--all-frames`` its whole clip: it passes only if every frame does.

    .venv/bin/python benchmarks/tiny/prompt_check.py --family flux [--weights PATH] [--prompts 32]
"""
from __future__ import annotations

from benchmarks.tiny.common import (
    HERE,
    codec_for,
    conditioning,
    data,
    empty_latent,
    get_family,
    load_trained,
    token_layout,
)

import argparse
import json
import math
from pathlib import Path

import comfy.sample
import numpy as np
import torch
from PIL import Image, ImageDraw

from comfyui_otcache.demo import prompt_check as pc
from comfyui_otcache.demo.tiny import split_prompts


def sample_images(model, fam, prompts, cfg: float, steps: int, first_seed: int = 7000,
                  layout: str = "object", sampler: str = "euler", all_frames: bool = False) -> torch.Tensor:
    """``[P, H, W, 3]``: each prompt's sample (a video's first frame), or ``[P, F, H, W, 3]`` with ``all_frames``."""
    codec = codec_for(model)
    negative = conditioning(fam, [None], layout)
    images = []
    for k, prompt in enumerate(prompts):
        latent = empty_latent(fam)["samples"]
        noise = comfy.sample.prepare_noise(latent, first_seed + k)
        out = comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", conditioning(fam, [prompt], layout), negative,
                                  latent, seed=first_seed + k, disable_pbar=True)
        decoded = codec.decode(out)  # [frames, H, W, 3]
        images.append(decoded if all_frames else decoded[0])
    return torch.stack(images)


def grid(images: torch.Tensor, prompts, passed: list[bool], path: Path) -> None:
    """One tile per sample (a clip: its frames side by side), framed green if it passed, red if not."""
    if images.ndim == 5:
        images = torch.cat(list(images.unbind(1)), dim=2)
    n = int(math.ceil(math.sqrt(len(images))))
    tile = 128
    width = tile * images.shape[2] // images.shape[1]
    canvas = Image.new("RGB", (n * (width + 6), n * (tile + 26)), (24, 27, 33))
    draw = ImageDraw.Draw(canvas)
    for k, (image, prompt, ok) in enumerate(zip(images, prompts, passed)):
        x, y = (k % n) * (width + 6) + 3, (k // n) * (tile + 26) + 3
        picture = Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).resize((width, tile),
                                                                                                     Image.NEAREST)
        draw.rectangle([x - 3, y - 3, x + width + 2, y + tile + 2], fill=(60, 180, 75) if ok else (220, 60, 60))
        canvas.paste(picture, (x, y))
        text, line = prompt.text(), width // 5  # characters per line
        draw.text((x, y + tile + 3), text[:line], fill=(225, 228, 232))
        draw.text((x, y + tile + 13), text[line:2 * line], fill=(225, 228, 232))
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sampling-shift", type=float, default=None,
                    help="sample at this model-sampling shift instead of the weights' own (FLUX: mu)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cfg", type=float, help="sample at this cfg instead of the model's own (an experiment)")
    ap.add_argument("--sampler", default="euler", help="sample with this ComfyUI sampler instead of euler (an experiment)")
    ap.add_argument("--data-set", choices=list(data.DATA_SETS),
                    help="check for this data set's objects (sizes) instead of the one the weights were trained on")
    ap.add_argument("--refuse-crosses", action="store_true",
                    help="do not count a plus (both bar orientations blended) as a bar (prompt_check.competitors)")
    ap.add_argument("--all-frames", action="store_true",
                    help="video: check every frame of each clip (a sample passes if all do), not only the first")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    model, meta = load_trained(args.family, args.weights, args.sampling_shift)
    cfg = args.cfg if args.cfg is not None else float(meta.get("cfg", 1.0))
    prompts = split_prompts("heldout", args.prompts)
    classifier = pc.load_background_classifier()
    video = bool(fam.frames and fam.frames > 1)
    all_frames = args.all_frames and video
    clips = sample_images(model, fam, prompts, cfg, args.steps, layout=token_layout(meta),
                          sampler=args.sampler, all_frames=all_frames)
    images = clips[:, 0] if all_frames else clips  # the first frames: components and confusion read these
    data_set = args.data_set or data.trained_data_set(meta)
    sizes = pc.check_sizes(data_set)  # the objects the model was trained to draw
    strict = args.refuse_crosses
    rng = np.random.default_rng([5, 99])
    if video:
        true_clips = torch.from_numpy(np.stack([data.render_clip(p, rng, fam.frames, data_set, fam.clip_size)
                                                for p in prompts])).float()
        truth = true_clips[:, 0]
    else:
        truth = torch.from_numpy(np.stack([data.render(p, rng, data_set) for p in prompts])).float()
    frames = {}
    if all_frames:
        passed, frames["frame_pass_rates"] = pc.check_clips(classifier, prompts, clips, sizes, strict)
        ceiling, frames["true_render_frame_pass_rates"] = pc.check_clips(classifier, prompts, true_clips, sizes, strict)
    else:
        passed = pc.check_images(classifier, prompts, images, sizes, strict)
        ceiling = pc.check_images(classifier, prompts, truth, sizes, strict)
    kinds = pc.background_kinds(classifier, images)
    background_ok = [p.background == data.ANY or k == p.background for p, k in zip(prompts, kinds)]
    result = {"family": args.family, "weights": str(args.weights or "demo/weights"), "cfg": cfg,
              "sampler": args.sampler, "steps": args.steps,
              "sampling_shift": meta.get("sampling_shift"), "data_set": data_set, "sizes": list(sizes),
              "refuse_crosses": strict, "all_frames": all_frames, **frames,
              "prompts": len(prompts), "pass_rate": float(np.mean(passed)),
              "background_rate": float(np.mean(background_ok)), "true_render_pass_rate": float(np.mean(ceiling)),
              "components": pc.check_components(classifier, prompts, images, sizes, strict),
              "true_render_components": pc.check_components(classifier, prompts, truth, sizes, strict),
              "shape_confusion": pc.shape_confusion(prompts, images, sizes, strict),
              "per_prompt": [{"prompt": p.text(), "passed": ok} for p, ok in zip(prompts, passed)]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"prompt_check_{args.family}.json").write_text(json.dumps(result, indent=1))
    grid(clips, prompts, passed, args.out / f"prompt_check_{args.family}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "per_prompt"}, indent=1))


if __name__ == "__main__":
    main()
