"""Train a tiny real ComfyUI FLUX with rectified flow on the procedural data set (benchmarks/tiny/data.py).

Training runs through ComfyUI's own ``BaseModel.apply_model`` (the code sampling runs),
deterministic from ``--seed`` (weights, data stream, noise, timesteps; 2 CPU threads).
The learning-rate schedule is fixed by ``--steps``; ``--minutes`` is only a safety cap
(if it stops the run early, the metadata says so and the result is no longer the
deterministic one).

Writes ``weights/flux.safetensors`` (bf16, EMA weights, metadata: arch, seed, steps,
loss), ``flux_loss.png`` (loss curve) and ``flux_samples.png`` (held-out prompts,
euler / simple / 28 steps / cfg 1, decoded with the fixed codec of data.py).

    .venv/bin/python benchmarks/tiny/train.py [--steps 3000] [--batch 16] [--seed 0] [--minutes 28]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

from common import FLUX_ARCH, WEIGHTS, build_tiny_model, data, flux_sigmas, set_training, velocity_loss

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import comfy.sample  # noqa: E402


def loss_curve_png(losses: list[float], path: Path, title: str) -> None:
    w, h, m = 640, 360, 44
    img = Image.new("RGB", (w, h), (24, 27, 33))
    d = ImageDraw.Draw(img)
    y = np.log10(np.asarray(losses))
    k = max(1, len(y) // 200)
    smooth = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) > k else y
    lo, hi = float(y.min()), float(np.percentile(y, 99))
    def px(i, v, n):
        return m + (w - 2 * m) * i / max(n - 1, 1), h - m - (h - 2 * m) * (v - lo) / max(hi - lo, 1e-9)
    for i, v in enumerate(y):
        x_, y_ = px(i, min(v, hi), len(y))
        d.point((x_, y_), fill=(70, 90, 110))
    d.line([px(i + k // 2, v, len(y)) for i, v in enumerate(smooth)], fill=(79, 195, 247), width=2)
    d.rectangle([m, m, w - m, h - m], outline=(60, 66, 76))
    d.text((m, 12), f"{title}: log10 rectified-flow loss vs step (raw, and moving mean of {k})", fill=(225, 228, 232))
    d.text((4, m), f"{hi:.2f}", fill=(225, 228, 232))
    d.text((4, h - m - 10), f"{lo:.2f}", fill=(225, 228, 232))
    d.text((m, h - m + 6), "0", fill=(225, 228, 232))
    d.text((w - m - 30, h - m + 6), str(len(y)), fill=(225, 228, 232))
    img.save(path)


def sample_grid(model, prompts, path: Path, steps: int = 28, seed: int = 0) -> None:
    enc, codec = data.PromptEncoder(), data.PatchCodec()
    tiles = []
    for k, p in enumerate(prompts):
        latent = torch.zeros(1, 16, data.LATENT, data.LATENT)
        noise = comfy.sample.prepare_noise(latent, seed + k)
        pos = [[enc(p)[None], {}]]
        out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", pos, pos, latent, seed=seed + k,
                                  disable_pbar=True)
        tiles.append(codec.decode(out)[0])
    n = int(math.ceil(math.sqrt(len(tiles))))
    grid = Image.new("RGB", (n * 130, n * 150), (24, 27, 33))
    d = ImageDraw.Draw(grid)
    for k, (t, p) in enumerate(zip(tiles, prompts)):
        im = Image.fromarray((t.numpy() * 255).round().astype(np.uint8)).resize((128, 128), Image.NEAREST)
        x, y = (k % n) * 130 + 1, (k // n) * 150 + 1
        grid.paste(im, (x, y))
        d.text((x, y + 130), p.text()[:24], fill=(225, 228, 232))
    grid.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux", choices=["flux"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--minutes", type=float, default=28.0, help="safety cap on training wall time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    arch = dict(FLUX_ARCH)
    model = build_tiny_model(args.family, args.seed, scale=1.0, **arch)
    dm = model.model.diffusion_model
    with torch.no_grad():  # start as the identity-ish flow: zero output projection
        dm.final_layer.linear.weight.zero_()
        dm.final_layer.linear.bias.zero_()
    params = sum(p.numel() for p in dm.parameters())
    set_training(model, True)
    ema = copy.deepcopy(dm.state_dict())
    opt = torch.optim.AdamW(dm.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    enc, codec = data.PromptEncoder(), data.PatchCodec()
    gen = torch.Generator().manual_seed(args.seed + 1)
    warmup = min(200, args.steps // 10)
    losses: list[float] = []
    start = time.perf_counter()
    capped = False
    print(f"tiny {args.family}: {params} parameters, {args.steps} steps of batch {args.batch}", flush=True)
    for step in range(args.steps):
        if time.perf_counter() - start > args.minutes * 60:
            capped = True
            print(f"time cap reached at step {step}", flush=True)
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.5 + 0.5 * math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        prompts, images = data.sample_batch(args.seed, step, args.batch)
        x0 = codec.encode(images)
        ctx = enc.batch(prompts)
        noise = torch.randn(x0.shape, generator=gen)
        u = torch.sigmoid(torch.randn(args.batch, generator=gen))  # logit-normal t, then FLUX's shift
        sigma = flux_sigmas(model, u).clamp(1e-3, 1.0)
        loss = velocity_loss(model, x0, ctx, noise, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dm.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))  # EMA warm-up: forget the random init
        with torch.no_grad():
            for k, v in dm.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v, alpha=1 - decay)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == args.steps - 1:
            el = time.perf_counter() - start
            print(f"step {step} loss {np.mean(losses[-50:]):.4f} lr {lr:.2e} {el:.0f}s "
                  f"({el / (step + 1):.3f} s/step)", flush=True)
    seconds = time.perf_counter() - start
    set_training(model, False)
    dm.load_state_dict(ema)

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    meta = {"arch": json.dumps(arch), "family": args.family, "seed": str(args.seed), "steps": str(len(losses)),
            "planned_steps": str(args.steps), "batch": str(args.batch), "lr": str(args.lr), "ema": str(args.ema),
            "params": str(params), "train_seconds": f"{seconds:.0f}", "time_capped": str(capped),
            "final_loss": f"{np.mean(losses[-100:]):.5f}", "data": "benchmarks/tiny/data.py",
            "decoder": "benchmarks/tiny/data.py PatchCodec (seed 4321, gain 4)"}
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in dm.state_dict().items()}
    save_file(state, str(args.out / f"{args.family}.safetensors"), metadata=meta)
    (args.out / f"{args.family}_train.json").write_text(json.dumps({**meta, "losses": [round(x, 5) for x in losses]}))
    loss_curve_png(losses, args.out / f"{args.family}_loss.png", f"tiny {args.family}")
    # Sample with the bf16 weights as they are shipped.
    dm.load_state_dict({k: v.float() for k, v in state.items()})
    sample_grid(model, data.held_out_prompts(args.samples), args.out / f"{args.family}_samples.png")
    print(f"done: {params} params, {len(losses)} steps, {seconds / 60:.1f} min, "
          f"final loss {meta['final_loss']}", flush=True)


if __name__ == "__main__":
    main()
