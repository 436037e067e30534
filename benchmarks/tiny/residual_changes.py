"""Does a tiny model's block residual follow the timestep rather than the image? (tiny-models issue, hypothesis 1)

`block` reuse keeps the block stack's residual ``R = exit - entry`` (what the transformer
blocks add to their input) from the last computed step and adds it to a later step's entry.
If ``R`` depends mostly on the timestep modulation and little on the content, a residual
cached at one noise level is wrong at the next, and more so across long gaps. This
measures, along full-compute sampling (euler / simple / N steps / the model's cfg) of
held-out prompts, with the block stack's first and last block patched (ComfyUI ``dit``
replace patches, the runtime's own keys) to read the entry and exit:

- ``step_change``: per step, the relative L1 change from the previous step of the residual
  ``R``, of the model output (the velocity ``v``, what `output` reuse keeps) and of the block
  stack's entry. TeaCache's relative-L1 indicator is the same measure on the model output.
- ``R1``: the first block's own residual, the indicator First Block Cache thresholds.
- ``gap_error``: the relative L1 error of reusing ``R`` (or ``v``) across a gap of g steps,
  ``|X(t + g) - X(t)|_1 / |X(t + g)|_1``, mean over t, for g = 1 ... ``--max-gap``.
- ``content_share``: at each step, how much ``R`` (or ``v``) differs between prompts sampled
  from the *same* noise, relative to how much it changes from the previous step:
  ``mean_pairs |X_a(t) - X_b(t)|_1 / mean_prompts |X(t) - X(t-1)|_1``. Well above 1: the
  prompt moves it more than one step does; well below 1: the timestep does.

    .venv/bin/python benchmarks/tiny/residual_changes.py --family flux [--steps 28] [--prompts 6] --out R.json
"""
from __future__ import annotations

from benchmarks.tiny.common import conditioning, empty_latent, get_family, load_trained, token_layout

import argparse
import itertools
import json
from pathlib import Path

import comfy.sample
import numpy as np
import torch

from comfyui_otcache.demo.tiny import split_prompts
from comfyui_otcache.otcache_comfy.cache_runtime import block_layout


def record_call_tensors(model):
    """A clone of ``model`` whose first and last blocks and model function record, per call,
    the block stack's entry and exit and the velocity; and the list they are appended to."""
    calls: list[dict] = []
    patched = model.clone()
    layout = block_layout(patched.model.diffusion_model)
    first, last = layout.first, layout.last

    def entry_patch(args, extra):
        # A copy: FLUX blocks add into their inputs in place. HunyuanVideo's last block runs on cat(txt, img).
        entry = torch.cat((args["txt"], args["img"]), 1) if layout.joint_tail else args["img"]
        calls[-1]["entry"] = entry.detach().clone()
        first_in = args["img"].detach().clone()
        out = extra["original_block"](args)
        calls[-1]["first"] = out["img"].detach() - first_in
        return out

    def exit_patch(args, extra):
        out = extra["original_block"](args)
        calls[-1]["exit"] = out["img"].detach().clone()
        return out

    def velocity_wrapper(apply_model, args):
        x, sigma = args["input"], args["timestep"]
        calls.append({"cond_or_uncond": list(args["cond_or_uncond"])})
        denoised = apply_model(x, sigma, **args["c"])
        calls[-1]["v"] = ((x - denoised) / sigma.view(-1, *[1] * (x.ndim - 1))).detach().clone()
        return denoised

    if first == last:
        raise ValueError("a one-block model has no stack to measure")
    patched.set_model_patch_replace(entry_patch, "dit", *first)
    patched.set_model_patch_replace(exit_patch, "dit", *last)
    patched.set_model_unet_function_wrapper(velocity_wrapper)
    return patched, calls


def sample_and_record(model, fam, prompts, steps: int, cfg: float, layout: str, seed: int) -> list[list[dict]]:
    """Per prompt, per step: the cond half's residual ``R``, velocity ``v`` and entry ``E`` (same noise for all)."""
    patched, calls = record_call_tensors(model)
    negative = conditioning(fam, [None], layout)
    runs = []
    for prompt in prompts:
        calls.clear()
        latent = empty_latent(fam)["samples"]
        noise = comfy.sample.prepare_noise(latent, seed)
        comfy.sample.sample(patched, noise, steps, cfg, "euler", "simple", conditioning(fam, [prompt], layout),
                            negative, latent, seed=seed, disable_pbar=True)
        if len(calls) != steps:
            raise RuntimeError(f"expected {steps} model calls, recorded {len(calls)}")
        runs.append([_cond_half(c) for c in calls])
    return runs


def _cond_half(call: dict) -> dict:
    """The conditioned sample's R, v and E of one call (cfg batches cond and uncond; ``cond_or_uncond`` says in which order)."""
    k = call["cond_or_uncond"].index(0)
    return {"R": (call["exit"] - call["entry"])[k:k + 1].double(), "v": call["v"][k:k + 1].double(),
            "E": call["entry"][k:k + 1].double(), "R1": call["first"][k:k + 1].double()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12))


def measure(runs: list[list[dict]], max_gap: int) -> dict:
    steps = len(runs[0])
    keys = ("R", "v", "E", "R1")
    step_change = {k: [float(np.mean([_rel(run[t][k], run[t - 1][k]) for run in runs])) for t in range(1, steps)]
                   for k in keys}
    gap_error = {k: [float(np.mean([_rel(run[t][k], run[t + g][k]) for run in runs for t in range(steps - g)]))
                     for g in range(1, max_gap + 1)] for k in ("R", "v", "R1")}
    content_share = {}
    for k in ("R", "v"):
        shares = []
        for t in range(1, steps):
            across = np.mean([float((a[t][k] - b[t][k]).abs().mean()) for a, b in itertools.combinations(runs, 2)])
            along = np.mean([float((run[t][k] - run[t - 1][k]).abs().mean()) for run in runs])
            shares.append(float(across / max(along, 1e-12)))
        content_share[k] = shares
    residual_share = [float(np.mean([float(run[t]["R"].abs().mean() / run[t]["E"].abs().mean()) for run in runs]))
                      for t in range(steps)]
    return {"step_change": step_change, "gap_error": gap_error, "content_share": content_share,
            "residual_over_entry": residual_share}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--max-gap", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fam = get_family(args.family)
    model, meta = load_trained(args.family, args.weights)
    prompts = split_prompts("heldout", args.prompts)
    runs = sample_and_record(model, fam, prompts, args.steps, float(meta.get("cfg", 1.0)), token_layout(meta), args.seed)
    result = {"family": args.family, "weights": str(args.weights or "demo/weights"), "steps": args.steps,
              "prompts": [p.text() for p in prompts], "seed": args.seed, **measure(runs, args.max_gap)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(f"{args.family}, N = {args.steps}, {len(prompts)} held-out prompts, one noise")
    for k, name in (("R", "residual"), ("v", "output"), ("E", "entry"), ("R1", "first block residual")):
        print(f"step change, {name:8s}: {fmt(result['step_change'][k])}")
    for k, name in (("R", "residual"), ("v", "output")):
        print(f"gap error 1..{args.max_gap}, {name:8s}: {fmt(result['gap_error'][k])}")
        print(f"content / step change, {name:8s}: {fmt(result['content_share'][k])}")
    print(f"|R| / |entry|: {fmt(result['residual_over_entry'])}")


if __name__ == "__main__":
    main()
