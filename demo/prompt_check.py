"""Does a tiny model draw what it is told? An automatic check against the renderer's own ground truth.

- **Objects** (no learning): a named object is present when some placement of the
  renderer's own shape mask (:func:`tiny_data._shape_mask`, at the renderer's sizes and
  orientations, anywhere) lies mostly on pixels within :data:`COLOUR_TOLERANCE` of the
  named colour while the ring around it does not (a region of that shape, not a larger
  field of the colour), and no other shape fits that region better (a square holds a
  circle, but the square fits it better). All placements at once by FFT convolution.
  The renderer draws shapes upright, so all five are told apart.
- **Background kind**: a small CNN trained on the renderer's images (it learns the six
  kinds to 100% on held-out renders in a few hundred steps; :mod:`.train_prompt_check`).

:func:`check_images` reads each prompt against its image: the named background kind
(unless ``any``), and per named object a region of its colour (or any named colour)
and shape (or any shape). Video frames (48x48; 32x32 before) are scaled up to 64x64 first;
:func:`check_clips` reads every frame of a clip.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from . import tiny_data as data

WEIGHTS = Path(__file__).resolve().parent / "weights" / "background_check.safetensors"
COLOUR_TOLERANCE = 0.25  # Euclidean RGB distance to a named colour (the renderer jitters by sigma 0.04)


def check_sizes(data_set: str = data.DATA_SET) -> tuple[float, ...]:
    """The object sizes the check tries for a model trained on ``data_set``: its renderer's, 0.5 apart."""
    lo, hi = data.object_sizes(data_set)
    return tuple(float(x) for x in np.arange(lo, hi + 0.01, 0.5))


SIZES = check_sizes()  # the shipped weights' data set
MIN_FIT = 0.5  # fit_map: e.g. 80% of the shape in the colour and at most 30% of the ring around it
RING = 2  # pixels around the shape that should not be in its colour (else it is part of a larger region)
CROSS = "cross"  # not a data shape: both bar orientations at once, what a model that blends them draws
NEIGHBOURHOOD = 15  # pixels (a window): where another shape fits better, this region is that shape
_KERNELS: dict = {}


def _kernels(shape: str, sizes: tuple = SIZES) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inside, ring) masks of ``shape`` over ``sizes`` and the renderer's orientations, centred in a 41x41 box."""
    if (shape, sizes) not in _KERNELS:
        y, x = np.mgrid[0:41, 0:41] + 0.5
        kernels = []
        for size in sizes:
            for angle in data.SHAPE_ANGLES.get(shape, (0.0,)):
                if shape == CROSS:
                    inside = (data._shape_mask("bar", 20.5, 20.5, size, 0.0, grid=(x, y))
                              | data._shape_mask("bar", 20.5, 20.5, size, math.pi / 2, grid=(x, y)))
                else:
                    inside = data._shape_mask(shape, 20.5, 20.5, size, angle, grid=(x, y))
                grown = ndimage.binary_dilation(inside, iterations=RING)
                kernels.append((inside.astype(np.float64), (grown & ~inside).astype(np.float64)))
        _KERNELS[shape, sizes] = kernels
    return _KERNELS[shape, sizes]


def fit_map(near: np.ndarray, shape: str, sizes: tuple = SIZES) -> np.ndarray:
    """Per pixel, how well ``shape`` centred there fits the colour region ``near`` (64x64 bool):
    the best, over the renderer's sizes and orientations, of (share of the shape's pixels in
    the colour) - (share of the ring around it in the colour, counting its pixels inside the image)."""
    from scipy.signal import fftconvolve

    m = near.astype(np.float64)
    best = np.full(m.shape, -1.0)
    for inside, ring in _kernels(shape, sizes):
        filled = fftconvolve(m, inside[::-1, ::-1], mode="same") / inside.sum()
        inside_image = fftconvolve(np.ones_like(m), ring[::-1, ::-1], mode="same")
        edge = fftconvolve(m, ring[::-1, ::-1], mode="same") / np.maximum(inside_image, 1e-9)
        np.maximum(best, filled - edge, out=best)
    return best


def competitors(refuse_crosses: bool = False) -> tuple[str, ...]:
    """The shapes a region is told apart from: the data's five, and with ``refuse_crosses`` a
    :data:`CROSS` too, so that a plus drawn for a bar (both orientations blended) is not a bar."""
    return data.SHAPES + ((CROSS,) if refuse_crosses else ())


def object_present(near: np.ndarray, shape: str, sizes: tuple = SIZES, refuse_crosses: bool = False) -> bool:
    """Whether ``near`` (a 64x64 bool mask of one colour) holds a region of ``shape``: somewhere the
    shape fits (:func:`fit_map` at least :data:`MIN_FIT`) better than every other shape fits within
    :data:`NEIGHBOURHOOD` pixels of there (a square holds a circle, but a square fits it better)."""
    shapes = competitors(refuse_crosses)
    fits = {t: fit_map(near, t, sizes) for t in shapes}
    ok = fits[shape] >= MIN_FIT
    for other in shapes:
        if other != shape:
            ok &= fits[shape] > ndimage.maximum_filter(fits[other], size=NEIGHBOURHOOD)
    return bool(ok.any())


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    return np.linalg.norm(image - np.asarray(data.COLOURS[colour]), axis=-1) < COLOUR_TOLERANCE


class BackgroundClassifier(nn.Module):
    """Four strided conv stages (64 -> 4 pixels) and a linear head on the 4x4 map."""

    def __init__(self, width: int = 24):
        super().__init__()
        layers, c = [], 3
        for out in (width, width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.GELU(), nn.Conv2d(out, out, 3, padding=1, stride=2),
                       nn.GroupNorm(4, out), nn.GELU()]
            c = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * 16, len(data.BACKGROUNDS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images * 2 - 1))


def labelled_backgrounds(seed: int, index: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered images ``[B, 3, 64, 64]`` (half of them as 32x32 video frames) and their background kinds."""
    rng = np.random.default_rng([seed, index, 17])
    images, kinds = [], []
    for _ in range(batch):
        prompt = data.random_prompt(rng)
        kind = data.BACKGROUNDS[rng.integers(len(data.BACKGROUNDS))]
        # v3's renders, as the shipped classifier was trained on (only the objects differ between data sets)
        image = data.render(data.Prompt(kind, prompt.objects), rng, data.LEGACY_DATA_SET)
        if rng.random() < 0.5:
            image = image.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1)
        images.append(image)
        kinds.append(data.BACKGROUNDS.index(kind))
    return torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2), torch.tensor(kinds)


def train_background_classifier(steps: int = 1500, batch: int = 32, seed: int = 0, log=print) -> BackgroundClassifier:
    torch.manual_seed(seed)
    model = BackgroundClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        x, kinds = labelled_backgrounds(seed, step, batch)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, kinds)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"background classifier step {step} loss {loss.item():.4f} "
                f"accuracy {(logits.argmax(1) == kinds).float().mean().item():.2f}")
    return model.eval()


def load_background_classifier(path: Path = WEIGHTS) -> BackgroundClassifier:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"no background classifier at {path}; train it with "
                                "benchmarks/tiny/train_prompt_check.py")
    model = BackgroundClassifier()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})  # stored as float16
    return model.eval()


def _as_64(images: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, 3]`` in [0, 1] at 64x64 (32x32 frames repeated 2x2, other sizes resized bilinearly)."""
    images = images.float().clamp(0, 1)
    if images.shape[1] == data.IMAGE // 2:
        images = images.repeat_interleave(2, 1).repeat_interleave(2, 2)
    elif images.shape[1] != data.IMAGE:
        images = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(data.IMAGE, data.IMAGE),
                                                 mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    return images


def named_object_present(image: np.ndarray, colour: str, shape: str, sizes: tuple = SIZES,
                         refuse_crosses: bool = False) -> bool:
    """Whether ``image`` (``[64, 64, 3]``) shows an object of ``colour`` and ``shape`` (either may be ``any``)."""
    colours = data.COLOUR_NAMES if colour == data.ANY else (colour,)
    shapes = data.SHAPES if shape == data.ANY else (shape,)
    return any(object_present(colour_mask(image, c), s, sizes, refuse_crosses) for c in colours for s in shapes)


def prompt_satisfied(prompt: data.Prompt, background: str, image: np.ndarray, sizes: tuple = SIZES,
                     refuse_crosses: bool = False) -> bool:
    """True when ``background`` is the prompt's (or it says ``any``) and every named object is present."""
    if prompt.background != data.ANY and background != prompt.background:
        return False
    return all(named_object_present(image, c, s, sizes, refuse_crosses) for c, s in prompt.objects)


@torch.no_grad()
def background_kinds(classifier: BackgroundClassifier, images: torch.Tensor) -> list[str]:
    """The background kind the classifier reads in each image (``[B, H, W, 3]``, 64x64 or smaller frames)."""
    return [data.BACKGROUNDS[k] for k in classifier(_as_64(images).permute(0, 3, 1, 2)).argmax(1).tolist()]


def check_images(classifier: BackgroundClassifier, prompts: list, images: torch.Tensor,
                 sizes: tuple = SIZES, refuse_crosses: bool = False) -> list[bool]:
    """Per prompt, whether its image (``[B, H, W, 3]``, 64x64 or smaller frames) shows what it names
    (objects at ``sizes``: :func:`check_sizes` of the model's data set; ``refuse_crosses``: :func:`competitors`)."""
    kinds = background_kinds(classifier, images)
    return [prompt_satisfied(p, k, img, sizes, refuse_crosses) for p, k, img in zip(prompts, kinds, _as_64(images).numpy())]


def check_clips(classifier: BackgroundClassifier, prompts: list, clips: torch.Tensor,
                sizes: tuple = SIZES, refuse_crosses: bool = False) -> tuple[list[bool], list[float]]:
    """Per prompt, whether *every* frame of its clip (``[B, F, H, W, 3]``) shows what it names
    (:func:`check_images` frame by frame: the check finds objects anywhere, so a moving one too);
    and per frame the share of prompts it passes."""
    per_frame = [check_images(classifier, prompts, clips[:, f], sizes, refuse_crosses) for f in range(clips.shape[1])]
    return [all(oks) for oks in zip(*per_frame)], [float(np.mean(oks)) for oks in per_frame]


def shape_confusion(prompts: list, images: torch.Tensor, sizes: tuple = SIZES,
                    refuse_crosses: bool = False) -> dict[str, dict[str, int]]:
    """Per named shape, what the images show in the object's colour: how often each set of
    shapes is found there (``"circle,square"``; ``"none"``). Tells a blob drawn for every
    shape (all found as ``circle``) from a wrong shape or a missing object."""
    table: dict[str, dict[str, int]] = {shape: {} for shape in data.SHAPES}
    for prompt, image in zip(prompts, _as_64(images).numpy()):
        for colour, shape in prompt.objects:
            if shape == data.ANY:
                continue
            found = [t for t in competitors(refuse_crosses) if named_object_present(image, colour, t, sizes, refuse_crosses)]
            key = ",".join(found) or "none"
            table[shape][key] = table[shape].get(key, 0) + 1
    return table


MIN_COLOUR_AREA = 0.5 * math.pi * data.OBJECT_SIZES[0] ** 2  # pixels: half the smallest named circle


def check_components(classifier: BackgroundClassifier, prompts: list, images: torch.Tensor,
                     sizes: tuple = SIZES, refuse_crosses: bool = False) -> dict[str, float]:
    """Which part of the prompts the images miss: the share of each part that is present.

    ``background``: the named kind (prompts naming one); ``colour``: at least
    :data:`MIN_COLOUR_AREA` pixels of a named colour (objects naming one); ``object_any_shape``:
    an object of the named colour in some shape; ``object``: colour and shape as named.
    """
    kinds = background_kinds(classifier, images)
    parts: dict[str, list[bool]] = {"background": [], "colour": [], "object_any_shape": [], "object": []}
    for prompt, kind, image in zip(prompts, kinds, _as_64(images).numpy()):
        if prompt.background != data.ANY:
            parts["background"].append(kind == prompt.background)
        for colour, shape in prompt.objects:
            if colour != data.ANY:
                parts["colour"].append(int(colour_mask(image, colour).sum()) >= MIN_COLOUR_AREA)
            parts["object_any_shape"].append(named_object_present(image, colour, data.ANY, sizes, refuse_crosses))
            parts["object"].append(named_object_present(image, colour, shape, sizes, refuse_crosses))
    return {name: float(np.mean(found)) if found else float("nan") for name, found in parts.items()}
