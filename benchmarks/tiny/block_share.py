"""The block stack's share of a step's FLOPs, per trained tiny model (issue: >= 85%).

One ``apply_model`` call at batch 1 (the family's latent, one prompt, sigma 0.5) under
``torch.utils.flop_counter.FlopCounterMode``, which counts the matmul, convolution and
attention FLOPs of every module (element-wise ops are not counted). The share is the FLOPs
inside the transformer blocks (``double_blocks``/``single_blocks`` of FLUX and HunyuanVideo,
``transformer_blocks`` of Qwen-Image, ``blocks`` of Wan; what ``block`` reuse replaces) over all FLOPs counted.
HunyuanVideo's text token refiner is outside the stack, as in ComfyUI's class.

    .venv/bin/python benchmarks/tiny/block_share.py [--families flux,qwen_image,hunyuan_video]
"""
from __future__ import annotations

from benchmarks.tiny.common import FAMILIES, conditioning, data, empty_latent, get_family, load_trained

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

STACKS = ("double_blocks", "single_blocks", "transformer_blocks", "blocks")  # "blocks": Wan


def block_share(family: str) -> dict:
    fam = get_family(family)
    model, _ = load_trained(family)
    base = model.model
    latent = torch.randn(empty_latent(fam)["samples"].shape, generator=torch.Generator().manual_seed(0))
    context = conditioning(fam, [data.held_out_prompts(1)[0]])[0]
    kwargs = {"c_crossattn": context[0], **({"y": context[1]["pooled_output"]} if "pooled_output" in context[1] else {})}
    sigma = torch.tensor([0.5])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        base.apply_model(base.latent_format.process_in(latent), sigma, **kwargs)
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values())
    name = type(base.diffusion_model).__name__
    inside = 0
    for module, ops in counts.items():
        parts = module.split(".")
        # Whole blocks only (e.g. "Flux.double_blocks.3"), so their submodules are not counted twice.
        if len(parts) == 3 and parts[0] == name and parts[1] in STACKS and parts[2].isdigit():
            inside += sum(ops.values())
    return {"family": family, "class": name, "flops": int(total), "block_flops": int(inside),
            "share": inside / total if total else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for family in args.families.split(","):
        print(json.dumps(block_share(family)), flush=True)


if __name__ == "__main__":
    main()
