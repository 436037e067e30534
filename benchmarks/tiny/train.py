"""Train a tiny real ComfyUI FLUX, Qwen-Image or HunyuanVideo with rectified flow on the procedural data set.

Training runs through ComfyUI's own ``BaseModel.apply_model`` (the code sampling runs),
deterministic from ``--seed`` (weights, data stream, noise, timesteps) for a given ``--threads``.
The learning-rate schedule is fixed by ``--steps``; ``--minutes`` is only a safety cap
(if it stops the run early, the metadata says so and the result is no longer the
deterministic one).

The data set is ``demo/tiny_data.py`` (images; 4-frame clips for HunyuanVideo).
Writes ``weights/<family>.safetensors`` (bf16, EMA weights, metadata: arch, seed, steps,
loss), ``flux_loss.png`` (loss curve) and ``flux_samples.png`` (held-out prompts,
euler / simple / 28 steps / the family's cfg, decoded with the fixed codec of data.py).

    .venv/bin/python benchmarks/tiny/train.py --family flux|qwen_image|hunyuan_video [--steps N] [--seed 0]

``--train-shift sampling`` draws the training noise levels through the shift the model samples
with instead of the architecture's default (the shipped weights use the default; tried on
FLUX, it drew fewer named shapes: ``README.md``, hypothesis 2). ``--object-weight W`` weighs the
latent positions of the objects and their outlines W times in the loss (the shipped weights: 1);
``--data-set v5`` trains on objects of one size (``tiny_data.DATA_SETS``). Neither gave shapes on FLUX.

Without ``--steps`` / ``--threads`` it uses the family's settings (``common.FAMILIES``): the
settings the shipped weights were trained with, on data set v3 (one token per object,
``prompt_tokens = object`` in the metadata).
"""
from __future__ import annotations

from benchmarks.tiny.common import (
    FAMILIES,
    SHIPPED_WEIGHTS,
    WEIGHTS,
    build_tiny_model,
    codec_for,
    conditioning,
    data,
    empty_latent,
    get_family,
    set_sampling_shift,
    set_training,
    training_batch,
    training_sigmas,
    velocity_loss,
)

import argparse
import copy
import json
import math
import time
from pathlib import Path

import comfy.sample  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


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


def sample_grid(model, fam, prompts, path: Path, steps: int = 28, seed: int = 0) -> None:
    codec = codec_for(model)
    tiles = []
    for k, p in enumerate(prompts):
        latent = empty_latent(fam)["samples"]
        noise = comfy.sample.prepare_noise(latent, seed + k)
        pos = conditioning(fam, [p])
        neg = conditioning(fam, [None])
        out = comfy.sample.sample(model, noise, steps, fam.cfg, "euler", "simple", pos, neg, latent, seed=seed + k,
                                  disable_pbar=True)
        frames = codec.decode(out)  # video: the frames side by side
        tiles.append(torch.cat(list(frames), dim=1))
    n = int(math.ceil(math.sqrt(len(tiles))))
    tw = 128 * tiles[0].shape[1] // tiles[0].shape[0]
    grid = Image.new("RGB", (n * (tw + 2), n * 150), (24, 27, 33))
    d = ImageDraw.Draw(grid)
    for k, (t, p) in enumerate(zip(tiles, prompts)):
        im = Image.fromarray((t.numpy() * 255).round().astype(np.uint8)).resize((tw, 128), Image.NEAREST)
        x, y = (k % n) * (tw + 2) + 1, (k // n) * 150 + 1
        grid.paste(im, (x, y))
        d.text((x, y + 130), p.text()[:tw // 5], fill=(225, 228, 232))
    grid.save(path)


def run_key(args) -> str:
    """What a checkpoint belongs to: a checkpoint of another run is never resumed."""
    key = {"family": args.family, "seed": args.seed, "steps": args.steps, "batch": args.batch,
           "lr": args.lr, "ema": args.ema, "threads": args.threads,
           "arch": training_arch(args), "train_shift": args.train_shift}
    if args.object_weight != 1.0:  # absent at 1, so checkpoints written before the option still resume
        key["object_weight"] = args.object_weight
    if args.data_set != data.LEGACY_DATA_SET:  # likewise
        key["data_set"] = args.data_set
    return json.dumps(key, sort_keys=True)


def training_arch(args) -> dict:
    """The family's architecture with the ``--arch KEY=JSON`` overrides applied."""
    arch = dict(get_family(args.family).arch)
    for item in args.arch or []:
        key, _, value = item.partition("=")
        try:
            arch[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--arch {item!r}: write KEY=VALUE with a JSON value, e.g. theta=64 or "
                             "axes_dim=[4,14,14]") from None
    return arch


class Checkpoint:
    """A resumable training state in safetensors + JSON (no pickle): weights, EMA, AdamW moments, RNG.

    Resuming restores every piece of state the loop reads, so an interrupted run ends with
    the same weights as an uninterrupted one (for the same thread count).
    """

    def __init__(self, directory: Path, key: str):
        self.dir, self.key = directory, key

    def exists(self) -> bool:
        meta = self.dir / "state.json"
        return meta.is_file() and json.loads(meta.read_text()).get("key") == self.key

    def save(self, step, dm, ema, opt, gen, losses, seconds) -> None:
        from safetensors.torch import save_file
        self.dir.mkdir(parents=True, exist_ok=True)
        names = [n for n, _ in dm.named_parameters()]
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in dm.state_dict().items()}
        tensors.update({f"ema.{k}": v.contiguous() for k, v in ema.items()})
        state = opt.state_dict()
        for index, slot in state["state"].items():
            for field, value in slot.items():
                tensors[f"opt.{names[index]}.{field}"] = value.reshape(-1) if value.ndim == 0 else value.contiguous()
        tensors["rng"] = gen.get_state()
        tmp = self.dir / "tensors.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(self.dir / "tensors.safetensors")
        meta = {"key": self.key, "step": step, "seconds": seconds, "losses": losses}
        (self.dir / "state.json.tmp").write_text(json.dumps(meta))
        (self.dir / "state.json.tmp").replace(self.dir / "state.json")

    def load(self, dm, ema, opt, gen):
        from safetensors.torch import load_file
        meta = json.loads((self.dir / "state.json").read_text())
        tensors = load_file(str(self.dir / "tensors.safetensors"))
        dm.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for k in ema:
            ema[k].copy_(tensors[f"ema.{k}"])
        params = dict(dm.named_parameters())
        for name, p in params.items():
            slot = {f: t for f, t in ((f, tensors.get(f"opt.{name}.{f}")) for f in ("step", "exp_avg", "exp_avg_sq"))
                    if t is not None}
            if slot:
                slot["step"] = slot["step"].reshape(())
                opt.state[p] = slot
        gen.set_state(tensors["rng"])
        return meta["step"], meta["losses"], meta["seconds"]

    def remove(self) -> None:
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="flux", choices=list(FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="default: the family's (FAMILIES[...].train_steps)")
    ap.add_argument("--batch", type=int, default=None, help="default: the family's")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--minutes", type=float, default=90.0, help="safety cap on training wall time")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads; results are deterministic for a given count (default: the family's)")
    ap.add_argument("--out", type=Path, default=WEIGHTS, help="training records (loss, samples, checkpoint)")
    ap.add_argument("--weights-out", type=Path, default=SHIPPED_WEIGHTS,
                    help="where <family>.safetensors goes (default: demo/weights, what load_tiny reads)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--checkpoint-every", type=int, default=50,
                    help="save a resumable checkpoint every this many steps (weights/<family>_ckpt/)")
    ap.add_argument("--arch", action="append", metavar="KEY=JSON",
                    help="override one architecture key of the family's config (repeatable), e.g. theta=64, "
                         "axes_dim=[4,14,14]; recorded in the weights' metadata")
    ap.add_argument("--train-shift", choices=("default", "sampling"), default="default",
                    help="draw training noise levels through the architecture's default shift (the shipped "
                         "weights) or through the shift the model samples with (Family.sampling_shift)")
    ap.add_argument("--object-weight", type=float, default=1.0,
                    help="weight of the latent positions that hold an object or its outline in the loss "
                         "(1: every position alike, the shipped weights); tests whether the models draw "
                         "blobs because the objects' outlines are a small part of the loss")
    ap.add_argument("--data-set", choices=list(data.DATA_SETS), default=data.DATA_SET,
                    help="v3: the shipped weights' data; v5: every object at the largest size; "
                         "v6: and at its cell's centre; v7: and every bar flat; v8: v7's images, clips moving at "
                         "their cells' velocities (tiny_data.DATA_SETS)")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop at this step keeping the checkpoint, as an interruption would (tests resuming)")
    args = ap.parse_args()
    fam = get_family(args.family)
    args.steps = fam.train_steps if args.steps is None else args.steps
    args.threads = fam.train_threads if args.threads is None else args.threads
    args.batch = fam.train_batch if args.batch is None else args.batch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    arch = training_arch(args)
    model = build_tiny_model(args.family, args.seed, scale=1.0, **arch)
    dm = model.model.diffusion_model
    with torch.no_grad():  # start from a zero velocity: zero output projection
        final = {"qwen_image": lambda: dm.proj_out, "wan21": lambda: dm.head.head}.get(
            args.family, lambda: dm.final_layer.linear)()
        final.weight.zero_()
        final.bias.zero_()
    params = sum(p.numel() for p in dm.parameters())
    set_training(model, True)
    ema = copy.deepcopy(dm.state_dict())
    opt = torch.optim.AdamW(dm.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    codec = codec_for(model)
    if args.train_shift == "sampling":  # training_sigmas reads the model's own shift
        set_sampling_shift(model, fam.sampling_shift)
    gen = torch.Generator().manual_seed(args.seed + 1)
    warmup = max(1, min(200, args.steps // 10))
    losses: list[float] = []
    ckpt = Checkpoint(args.out / f"{args.family}_ckpt", run_key(args))
    first, spent = 0, 0.0
    if not args.fresh and ckpt.exists():
        first, losses, spent = ckpt.load(dm, ema, opt, gen)
        print(f"resumed from {ckpt.dir} at step {first}", flush=True)
    start = time.perf_counter() - spent
    capped = False
    print(f"tiny {args.family}: {params} parameters, {args.steps} steps of batch {args.batch}", flush=True)
    for step in range(first, args.steps):
        if step > first and step % args.checkpoint_every == 0:
            ckpt.save(step, dm, ema, opt, gen, losses, time.perf_counter() - start)
        if time.perf_counter() - start > args.minutes * 60 or step == args.stop_at:
            capped = True
            print(f"stopped at step {step} (time cap or --stop-at); rerun to resume", flush=True)
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.5 + 0.5 * math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        prompts, x0, weights = training_batch(fam, args.seed, step, args.batch, codec, args.object_weight,
                                           args.data_set)
        # Conditioning dropout: the empty prompt for some samples, so sampling can use cfg.
        dropped = torch.rand(args.batch, generator=gen) < fam.cond_dropout
        ctx = conditioning(fam, [None if d else p for p, d in zip(prompts, dropped)])[0][0]
        noise = torch.randn(x0.shape, generator=gen)
        # (Logit-normal t *and* the shift left sigma < 0.2 at 0.5% of samples: the first run
        # never learnt the last steps and came out blocky.)
        sigma = training_sigmas(model, fam, args.batch, gen)
        loss = velocity_loss(model, x0, ctx, noise, sigma, weights)
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
    if capped:  # keep the checkpoint, so a longer cap continues the same run
        ckpt.save(len(losses), dm, ema, opt, gen, losses, seconds)
    set_training(model, False)
    dm.load_state_dict(ema)

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    meta = {"arch": json.dumps(arch), "family": args.family, "seed": str(args.seed), "steps": str(len(losses)),
            "planned_steps": str(args.steps), "batch": str(args.batch), "lr": str(args.lr), "ema": str(args.ema),
            "params": str(params), "threads": str(args.threads), "train_seconds": f"{seconds:.0f}", "time_capped": str(capped),
            "final_loss": f"{np.mean(losses[-100:]):.5f}",
            "data": "demo/tiny_data.py" + (f" clips of {fam.frames} frames" if (fam.frames or 1) > 1 else ""),
            "latent": json.dumps(list(fam.latent_shape(1)[1:])),  # load_tiny refuses another layout
            "decoder": "demo/tiny_data.py PatchCodec (seed 4321, gain 4)",
            "prompt_tokens": data.TRAINED_LAYOUT, "data_set": args.data_set,
            "uniform_sigma_share": str(fam.uniform_sigma_share), "cond_dropout": str(fam.cond_dropout),
            "cfg": str(fam.cfg), "sampling_shift": str(fam.sampling_shift), "train_shift": args.train_shift,
            "object_weight": str(args.object_weight)}
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in dm.state_dict().items()}
    args.weights_out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.weights_out / f"{args.family}.safetensors"), metadata=meta)
    (args.out / f"{args.family}_train.json").write_text(json.dumps({**meta, "losses": [round(x, 5) for x in losses]}))
    loss_curve_png(losses, args.out / f"{args.family}_loss.png", f"tiny {args.family}")
    # Sample with the bf16 weights as they are shipped, at the shift they sample with.
    dm.load_state_dict({k: v.float() for k, v in state.items()})
    set_sampling_shift(model, fam.sampling_shift)
    sample_grid(model, fam, data.held_out_prompts(args.samples), args.out / f"{args.family}_samples.png")
    if not capped:
        ckpt.remove()
    print(f"done: {params} params, {len(losses)} steps, {seconds / 60:.1f} min, "
          f"final loss {meta['final_loss']}", flush=True)


if __name__ == "__main__":
    main()
