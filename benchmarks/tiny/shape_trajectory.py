"""Where does a tiny model lose the named shape? Its denoised estimate along sampling, one object per prompt.

For ``solid background; red <shape>`` (each of the five shapes, one object in the first
cell), sampled from ``--seeds`` noises (euler / simple / N steps / the model's cfg, the
KSampler's own path; the denoised estimate of every step from its callback):

- ``knows_the_shape``: per named shape, which shape's *true* mean image (the renderer's
  average over 256 draws of the prompt) the step-0 denoised estimate leans toward (the
  correlation of their redness maps' departures from the five shapes' average). At sigma = 1
  the ideal estimate is that mean, so a model that reads the shape from the prompt names its own.
- ``outline_iou``: per step, the IoU of the estimate's red region with the final sample's,
  mean over shapes and seeds: the step by which the outline is decided.
- ``found``: per named shape, the shapes the prompt check finds in the final samples.

    .venv/bin/python benchmarks/tiny/shape_trajectory.py --family flux [--weights W] --out DIR
"""
from __future__ import annotations

from benchmarks.tiny.common import codec_for, conditioning, data, empty_latent, get_family, load_trained, token_layout

import argparse
import json
from pathlib import Path

import comfy.sample
import numpy as np
import torch
from PIL import Image

from comfyui_otcache.demo import prompt_check as pc

COLOUR = "red"


def redness(images: np.ndarray) -> np.ndarray:
    return images[..., 0] - 0.5 * (images[..., 1] + images[..., 2])


def _first_frames(images: torch.Tensor, batch: int) -> np.ndarray:
    """``[B*T, H, W, 3]`` (video) or ``[B, H, W, 3]`` -> the first frame of each, at 64x64."""
    frames = images.reshape(batch, -1, *images.shape[1:])[:, 0]
    return pc._as_64(frames).numpy()


def true_means(prompts: list, data_set: str, draws: int = 256) -> np.ndarray:
    rng = np.random.default_rng([5, 123])
    return np.stack([np.mean([data.render(p, rng, data_set) for _ in range(draws)], axis=0) for p in prompts])


def closest(estimates: np.ndarray, means: np.ndarray) -> list[str]:
    """Per estimate (one per shape), the shape whose true mean its redness map leans toward: the
    correlation of each one's departure from the average over the five shapes (so a blurrier
    estimate is not matched to the roundest mean for being blurred)."""
    def unit(x):
        x = redness(x).reshape(len(x), -1)
        x = x - x.mean(0, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return [data.SHAPES[k] for k in (unit(estimates) @ unit(means).T).argmax(1)]


def trajectory(model, fam, prompts, steps: int, cfg: float, layout: str, seed: int):
    """Per step the decoded denoised estimates ``[steps, B, 64, 64, 3]``, and the final samples."""
    codec = codec_for(model)
    latent = empty_latent(fam, len(prompts))["samples"]
    noise = comfy.sample.prepare_noise(latent[:1], seed).expand_as(latent).contiguous()  # one noise for all shapes
    estimates = []

    def callback(step, x0, x, total):
        estimates.append(_first_frames(codec.decode(x0, internal=True), len(prompts)))

    out = comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conditioning(fam, prompts, layout),
                              conditioning(fam, [None] * len(prompts), layout), latent, seed=seed,
                              callback=callback, disable_pbar=True)
    return np.stack(estimates), _first_frames(codec.decode(out), len(prompts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--show", default="0,2,4,8,16", help="steps whose estimates the picture shows (seed 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    model, meta = load_trained(args.family, args.weights)
    cfg, layout = float(meta.get("cfg", 1.0)), token_layout(meta)
    data_set = data.trained_data_set(meta)
    sizes = pc.check_sizes(data_set)
    prompts = [data.Prompt("solid", ((COLOUR, shape),)) for shape in data.SHAPES]
    means = true_means(prompts, data_set)
    knows, iou, found, picture = [], [], {s: [] for s in data.SHAPES}, None
    for seed in range(7000, 7000 + args.seeds):
        estimates, final = trajectory(model, fam, prompts, args.steps, cfg, layout, seed)
        knows.append(closest(estimates[0], means))
        final_mask = pc.colour_mask(final, COLOUR)
        masks = pc.colour_mask(estimates, COLOUR)
        iou.append([[(m & f).sum() / max((m | f).sum(), 1) for m, f in zip(step, final_mask)] for step in masks])
        for shape, image in zip(data.SHAPES, final):
            found[shape].append(",".join(t for t in data.SHAPES if pc.named_object_present(image, COLOUR, t, sizes))
                                or "none")
        if picture is None:
            rows = [estimates[int(k)] for k in args.show.split(",")] + [final, means]
            picture = np.concatenate([np.concatenate(list(row), 1) for row in rows], 0)
    result = {"family": args.family, "weights": str(args.weights or "demo/weights"), "cfg": cfg, "steps": args.steps,
              "seeds": args.seeds, "data_set": data_set,
              "knows_the_shape": {s: [k[i] for k in knows] for i, s in enumerate(data.SHAPES)},
              "outline_iou": [float(x) for x in np.mean(iou, axis=(0, 2))],
              "found": found, "picture_rows": [f"step {k}" for k in args.show.split(",")] + ["final", "true mean"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"shape_trajectory_{args.family}.json").write_text(json.dumps(result, indent=1))
    Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8)).resize(
        (picture.shape[1] * 2, picture.shape[0] * 2), Image.NEAREST).save(args.out / f"shape_trajectory_{args.family}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "picture_rows"}, indent=1))


if __name__ == "__main__":
    main()
