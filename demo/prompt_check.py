"""Does a tiny model draw what it is told? A classifier trained on the renderer's own images.

The renderer (:mod:`tiny_data`) knows the ground truth of every image it draws: the
background kind, and each object's colour name, shape, size and how much of it is left
visible after occlusion. A small CNN learns, from rendered images only:

- ``background``: which of the 6 kinds (always defined, also for prompts saying ``any``);
- ``objects``: 8 x 5 independent presence logits, one per (colour, shape), true when an
  object of that colour and shape, of a named object's size, is at least half visible.

:func:`prompt_satisfied` then reads a prompt against the predictions: its background
kind (unless ``any``) is the predicted one, and each named object has a present
(colour, shape), with ``any`` taking the best over that axis. Unnamed small shapes are
never labelled, so they neither help nor hurt. Half of the training images are pooled
to 32x32 and scaled back, so video frames (drawn at 32x32) are read too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import tiny_data as data

WEIGHTS = Path(__file__).resolve().parent / "weights" / "prompt_check.safetensors"
NAMED_MIN_SIZE = 9.0  # named objects are drawn at size 9-17, unnamed extras at 3-5.5
VISIBLE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Truth:
    background: int  # index into data.BACKGROUNDS
    objects: np.ndarray  # [8, 5] bool


def truth_of(lay: data.Layout, kind: str) -> Truth:
    """Ground-truth labels of a drawn layout: visible named-size objects by nearest named colour."""
    names = np.array([data.COLOURS[c] for c in data.COLOUR_NAMES])
    present = np.zeros((len(data.COLOUR_NAMES), len(data.SHAPES)), dtype=bool)
    masks = [data._shape_mask(s, cx, cy, size, angle) for (_, s, size, cx, cy, angle) in lay.items]
    for k, (colour, shape, size, *_rest) in enumerate(lay.items):
        if size < NAMED_MIN_SIZE or not masks[k].any():
            continue
        covered = np.zeros_like(masks[k])
        for later in masks[k + 1:]:
            covered |= later
        visible = (masks[k] & ~covered).sum() / masks[k].sum()
        if visible >= VISIBLE_SHARE:
            c = int(np.argmin(((names - colour) ** 2).sum(axis=1)))
            present[c, data.SHAPES.index(shape)] = True
    return Truth(data.BACKGROUNDS.index(kind), present)


def labelled_batch(seed: int, index: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rendered images ``[B, 3, 64, 64]``, background labels ``[B]``, object labels ``[B, 40]``."""
    rng = np.random.default_rng([seed, index, 17])
    images, backgrounds, objects = [], [], []
    for _ in range(batch):
        prompt = data.random_prompt(rng, p_any=0.25)
        kind = prompt.background if prompt.background != data.ANY else None
        if kind is None:  # draw the kind here, so the label is known
            kind = data.BACKGROUNDS[rng.integers(len(data.BACKGROUNDS))]
            prompt = data.Prompt(kind, prompt.objects)
        lay = data.layout(prompt, rng)
        image = data.draw(lay)
        if rng.random() < 0.5:  # as a video frame: drawn at 32x32
            image = image.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1)
        truth = truth_of(lay, kind)
        images.append(image)
        backgrounds.append(truth.background)
        objects.append(truth.objects.reshape(-1))
    x = torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2)
    return x, torch.tensor(backgrounds), torch.from_numpy(np.stack(objects)).float()


class PromptClassifier(nn.Module):
    """Conv stages down to an 8x8 grid; objects: a 40-way map, max over the grid ("is one anywhere").

    The max over positions is the inductive bias of presence: an object is present when
    some place shows it. The background is read from the average over positions.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        layers, c = [], 3
        for out, stride in ((width, 2), (2 * width, 2), (2 * width, 2), (2 * width, 1)):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.GELU(), nn.Conv2d(out, out, 3, padding=1, stride=stride),
                       nn.GroupNorm(8, out), nn.GELU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.background = nn.Linear(c, len(data.BACKGROUNDS))
        self.objects = nn.Conv2d(c, len(data.COLOUR_NAMES) * len(data.SHAPES), 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(images * 2 - 1)  # [B, C, 8, 8]
        return self.background(h.mean(dim=(2, 3))), self.objects(h).amax(dim=(2, 3))


def train_classifier(steps: int = 3000, batch: int = 64, seed: int = 0, log=print) -> PromptClassifier:
    """Deterministic training on the renderer's images (stream ``seed``)."""
    torch.manual_seed(seed)
    model = PromptClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for step in range(steps):
        x, bg, obj = labelled_batch(seed, step, batch)
        bg_logits, obj_logits = model(x)
        loss = nn.functional.cross_entropy(bg_logits, bg) + 4 * nn.functional.binary_cross_entropy_with_logits(
            obj_logits, obj, pos_weight=torch.full((obj.shape[1],), 4.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            exact = ((obj_logits > 0) == (obj > 0.5)).all(1).float().mean()
            log(f"classifier step {step} loss {float(loss):.4f} objects exact {float(exact):.2f}")
    return model.eval()


def load_classifier(path: Path = WEIGHTS) -> PromptClassifier:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"no prompt classifier at {path}; train it with "
                                "`python -m comfyui_otcache.demo.train_prompt_check`")
    model = PromptClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def predict(model: PromptClassifier, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[B, H, W, 3]`` in [0, 1] (64x64, or 32x32 frames) -> (background ``[B]``, object probs ``[B, 8, 5]``)."""
    x = images.float().permute(0, 3, 1, 2)
    if x.shape[-1] == 32:
        x = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    bg, obj = model(x)
    return bg.argmax(1).numpy(), torch.sigmoid(obj).reshape(-1, len(data.COLOUR_NAMES), len(data.SHAPES)).numpy()


def prompt_satisfied(prompt: data.Prompt, background: int, objects: np.ndarray, threshold: float = 0.5) -> bool:
    """True when the predicted background and objects show everything the prompt names."""
    if prompt.background != data.ANY and data.BACKGROUNDS[background] != prompt.background:
        return False
    for colour, shape in prompt.objects:
        rows = slice(None) if colour == data.ANY else data.COLOUR_NAMES.index(colour)
        cols = slice(None) if shape == data.ANY else data.SHAPES.index(shape)
        if objects[rows, cols].max() < threshold:
            return False
    return True


def check_images(model: PromptClassifier, prompts: list, images: torch.Tensor) -> list[bool]:
    """Per prompt, whether its image (``[B, H, W, 3]``) shows what it names."""
    backgrounds, objects = predict(model, images)
    return [prompt_satisfied(p, int(b), o) for p, b, o in zip(prompts, backgrounds, objects)]
