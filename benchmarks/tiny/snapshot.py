"""A running training's EMA weights as a weights file ``load_tiny`` reads: look at a model before it is done.

``train.py`` checkpoints every 50 steps (``<out>/<family>_ckpt/``). This writes the
checkpoint's EMA weights in bf16 with the metadata ``load_weights`` needs (family, arch,
cfg, prompt token layout, the step), so ``prompt_check.py --weights`` or
``check_schedules.py --weights`` can read a model mid-training. The running training is
not touched (it replaces its checkpoint atomically; this only reads it).

    .venv/bin/python benchmarks/tiny/snapshot.py benchmarks/tiny/weights/flux_ckpt /tmp/flux_snapshot.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def snapshot(checkpoint: Path, out: Path) -> dict:
    """Write ``checkpoint``'s EMA weights to ``out``; returns the metadata written."""
    state = json.loads((checkpoint / "state.json").read_text())
    run = json.loads(state["key"])
    from comfyui_otcache.demo.tiny import get_family  # noqa: PLC0415  (after the host import)
    from comfyui_otcache.demo.tiny_data import TRAINED_LAYOUT  # noqa: PLC0415

    fam = get_family(run["family"])
    tensors = load_file(str(checkpoint / "tensors.safetensors"))
    ema = {k[len("ema."):]: v.to(torch.bfloat16).contiguous() for k, v in tensors.items() if k.startswith("ema.")}
    if not ema:
        raise SystemExit(f"{checkpoint} holds no EMA weights; is it a train.py checkpoint?")
    meta = {"family": run["family"], "arch": json.dumps(run["arch"]), "seed": str(run["seed"]),
            "steps": str(state["step"]), "planned_steps": str(run["steps"]), "threads": str(run["threads"]),
            "cfg": str(fam.cfg), "sampling_shift": str(fam.sampling_shift), "prompt_tokens": TRAINED_LAYOUT,
            "train_shift": run.get("train_shift", "default"), "object_weight": str(run.get("object_weight", 1.0)),
            "data_set": run.get("data_set", "v3"), "snapshot_of": str(checkpoint)}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(ema, str(out), metadata=meta)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path, help="train.py's checkpoint folder, <out>/<family>_ckpt")
    ap.add_argument("out", type=Path, help="the weights file to write")
    args = ap.parse_args()
    meta = snapshot(args.checkpoint, args.out)
    print(f"wrote {args.out}: {meta['family']} at step {meta['steps']} of {meta['planned_steps']}")


if __name__ == "__main__":
    import benchmarks.tiny.common  # noqa: F401  (imports ComfyUI and the pack)

    main()
