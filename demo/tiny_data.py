"""Procedural, conditioned data set for the tiny trained models (deterministic from a seed).

Images are 64x64 RGB: a background and a few shapes. The *prompt* names only

- the background kind (``solid``, ``hgrad``, ``vgrad``, ``stripes``, ``checker``, ``rings``) or ``any``;
- 1 to 3 objects, each a colour (8 named colours) or ``any``, and a shape (``circle``,
  ``square``, ``triangle``, ``diamond``, ``bar``) or ``any``.

Everything else is left open and drawn at random: the background's two near-grey colours
(a dark and a light one), the objects' sizes and small shifts, a bar's orientation, small
colour jitter, and whatever the prompt leaves ``any``. Each object has its place (the
k-th object in the k-th quarter of the image) and each background kind its geometry, so
what the prompt names (vivid objects, upright and apart, on a background pattern) is
unambiguous to see and to check; what the sampler must decide early, at high noise, is
what the prompt leaves open. This is data set v3. v1 also drew unnamed extra shapes, rotations,
occlusion and backgrounds in any colour; v2 drew named objects only but anywhere, on open
background geometry (stripe angle and phase, checker offset, ring centre) at low contrast.
Models trained on either for an hour drew colour blobs and camouflage, not the named
shapes and patterns.

Conditioning: a prompt is a fixed-length list of ``TOKENS`` tokens ``(slot, values)``:
the background kind, the object count and one token per object (its colour and shape);
its embedding is, per token, the sum of fixed random value embeddings and a fixed random
slot embedding (seeded, no learning), ``[TOKENS, CONTEXT_DIM]`` (:class:`PromptEncoder`).

Latent space (:class:`PatchCodec`): a fixed, seeded *linear* decoder maps a 16-channel
latent pixel to a 2x2x3 RGB patch, so a 32x32x16 latent (256 FLUX image tokens with
patch size 2) decodes to 64x64x3. The encoder is its least-squares inverse; as the
decoder is onto (12 < 16), every image round-trips exactly, and the data latents lie
in a 12-dim subspace of the 16 channels. Latents are scaled to about
unit variance in the model's internal space; :meth:`PatchCodec.decode` takes the
KSampler's latent (after the FLUX latent format's ``process_out``) and returns pixels.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

IMAGE = 64
PATCH = 2
LATENT = IMAGE // PATCH  # 32: latent 32x32x16, 16x16 = 256 FLUX image tokens (patch_size 2)
CHANNELS = 16
TOKENS = 8
MAX_OBJECTS = 3  # the slot layout's 2 + 2 * 3 = TOKENS: a fourth object has no token slots
CLIP_FRAMES = 2  # video clips (HunyuanVideo): 2 frames of 48x48
CLIP_SIZE = 48  # a clip frame's pixels: drawn at 64x64 and box-filtered down (draw_clip)
CONTEXT_DIM = 32

COLOURS = {
    "red": (0.90, 0.15, 0.15), "green": (0.15, 0.75, 0.20), "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.15), "cyan": (0.15, 0.85, 0.90), "magenta": (0.85, 0.20, 0.80),
    "white": (0.95, 0.95, 0.95), "black": (0.05, 0.05, 0.05),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle", "diamond", "bar")
BACKGROUNDS = ("solid", "hgrad", "vgrad", "stripes", "checker", "rings")
ANY = "any"
PAD = "pad"

# FLUX latent format (comfy.latent_formats.Flux): internal = (user - shift) * scale
FLUX_SCALE, FLUX_SHIFT = 0.3611, 0.1159


# ----------------------------------------------------------------- prompts


@dataclasses.dataclass(frozen=True)
class Prompt:
    background: str  # a BACKGROUNDS name or "any"
    objects: tuple[tuple[str, str], ...]  # (colour or "any", shape or "any"), 1..3

    def text(self) -> str:
        objs = ", ".join(f"{c} {s}" for c, s in self.objects)
        return f"{self.background} background; {objs}"

    def tokens(self, layout: str = "object") -> list[tuple[str, tuple[str, ...]]]:
        """``(slot, values)`` per token. ``object`` (data set v3's models): one token per object carrying its
        colour and shape; ``slot`` (earlier models): a colour token and a shape token per object."""
        toks = [("bg", (self.background,)), ("count", (str(len(self.objects)),))]
        for k, (c, s) in enumerate(self.objects):
            toks += [(f"object{k}", (c, s))] if layout == "object" else [(f"colour{k}", (c,)), (f"shape{k}", (s,))]
        toks += [("pad", (PAD,))] * (TOKENS - len(toks))
        return toks


def random_prompt(rng: np.random.Generator, p_any: float = 0.25) -> Prompt:
    bg = ANY if rng.random() < p_any else BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    n = int(rng.integers(1, 4))
    objs = []
    for _ in range(n):
        c = ANY if rng.random() < p_any else COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
        s = ANY if rng.random() < p_any else SHAPES[rng.integers(len(SHAPES))]
        objs.append((c, s))
    return Prompt(bg, tuple(objs))


TOKEN_LAYOUTS = ("object", "slot")
TRAINED_LAYOUT = "object"  # what benchmarks/tiny/train.py trains with now (written to the weights' prompt_tokens)


class PromptEncoder:
    """Prompt -> ``[TOKENS, CONTEXT_DIM]``: per token, fixed random value embeddings summed, plus a slot embedding.

    ``layout="object"`` (data set v3's models) gives each object one token, the sum of its
    colour's and its shape's embeddings: a model reads which shape goes with which colour
    from one token. ``layout="slot"`` (the models trained before) gives colour and shape a
    token each, bound only by their slot embeddings; models trained on it drew the named
    colours in the wrong or no shape. Seeded and learning-free; the slot layout's
    embeddings are unchanged from before.
    """

    def __init__(self, seed: int = 1234, dim: int = CONTEXT_DIM, layout: str = "object"):
        if layout not in TOKEN_LAYOUTS:
            raise ValueError(f"token layout must be one of {', '.join(TOKEN_LAYOUTS)}; got {layout!r}")
        gen = torch.Generator().manual_seed(seed)
        values = [ANY, PAD, *BACKGROUNDS, *COLOUR_NAMES, *SHAPES, "1", "2", "3"]
        table = torch.randn(len(values), dim, generator=gen)
        self.values = {v: table[i] for i, v in enumerate(values)}
        slots = ["bg", "count", "pad"] + [f"{kind}{k}" for k in range(3) for kind in ("colour", "shape")]
        stable = torch.randn(len(slots), dim, generator=gen) * 0.5
        self.slots = {s: stable[i] for i, s in enumerate(slots)}
        objects = torch.randn(MAX_OBJECTS, dim, generator=torch.Generator().manual_seed(seed + 1)) * 0.5
        self.slots.update({f"object{k}": objects[k] for k in range(MAX_OBJECTS)})
        self.dim, self.layout = dim, layout

    def __call__(self, prompt: Prompt) -> torch.Tensor:
        return torch.stack([sum((self.values[v] for v in values), self.slots[s])
                            for s, values in prompt.tokens(self.layout)])

    def null(self) -> torch.Tensor:
        """The empty prompt (every token padding): what training shows for dropped conditioning, so cfg works."""
        return torch.stack([self.values[PAD] + self.slots["pad"]] * TOKENS)

    def batch(self, prompts) -> torch.Tensor:
        """Prompts (``None`` is the empty prompt) -> ``[B, TOKENS, CONTEXT_DIM]``."""
        return torch.stack([self.null() if p is None else self(p) for p in prompts])


# ----------------------------------------------------------------- rendering


def _grid():
    y, x = np.mgrid[0:IMAGE, 0:IMAGE].astype(np.float64) + 0.5
    return x, y


_X, _Y = _grid()


BACKGROUND_RANGE = (0.25, 0.75)  # muted, near-grey background colours: far (RGB distance) from every named colour
BACKGROUND_CONTRAST = (0.3, 0.45)  # brightness step between a pattern's two colours, so the kind shows at high noise
BACKGROUND_PERIOD = 16.0  # pixels: stripes, checker cells and rings (4 tokens of 4x4 pixels)


def background_weights(kind: str) -> np.ndarray:
    """Where a background kind shows its second colour, ``[64, 64]`` in [0, 1]: a fixed geometry per kind.

    The geometry is the kind's alone (horizontal stripes, a checker of 16-pixel cells, rings
    around the centre, gradients from the top or left), so the prompt decides it; only the
    two colours are open. (Data set v2 also drew the stripes' angle and phase, the checker's
    offset and the rings' centre: models trained for an hour drew camouflage of the two
    colours instead of any pattern, never committing to one phase.)
    """
    if kind == "solid":
        return np.zeros((IMAGE, IMAGE))
    if kind in ("hgrad", "vgrad"):
        return (_X if kind == "hgrad" else _Y) / IMAGE
    if kind == "stripes":
        return (np.floor(_Y / (BACKGROUND_PERIOD / 2)) % 2).astype(np.float64)
    if kind == "checker":
        return ((np.floor(_X / BACKGROUND_PERIOD) + np.floor(_Y / BACKGROUND_PERIOD)) % 2).astype(np.float64)
    if kind == "rings":
        r = np.hypot(_X - IMAGE / 2, _Y - IMAGE / 2)
        return 0.5 - 0.5 * np.cos(2 * math.pi * r / BACKGROUND_PERIOD)
    raise ValueError(kind)


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A dark and a light near-grey colour (a slight tint each) over the kind's geometry, dark where it is 0.

    Dark and light never swap: with a swap the average image of a kind is flat grey, so at
    high noise nothing says where the pattern's phase is, and models drew camouflage.
    """
    lo, hi = BACKGROUND_RANGE
    dark = np.clip(rng.uniform(lo, hi - BACKGROUND_CONTRAST[1]) + rng.uniform(-0.05, 0.05, 3), lo, hi)
    light = np.clip(dark + rng.uniform(*BACKGROUND_CONTRAST) + rng.uniform(-0.05, 0.05, 3), lo, hi)
    w = background_weights(kind)
    return dark[None, None] * (1 - w[..., None]) + light[None, None] * w[..., None]


def _shape_mask(shape: str, cx: float, cy: float, size: float, angle: float, grid=None) -> np.ndarray:
    """The shape's pixels on the image grid (or on ``grid = (x, y)``, pixel centres)."""
    x, y = grid if grid is not None else (_X, _Y)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (x - cx) * ca + (y - cy) * sa
    v = -(x - cx) * sa + (y - cy) * ca
    if shape == "circle":
        return u * u + v * v <= size * size
    if shape == "square":
        return (np.abs(u) <= size * 0.85) & (np.abs(v) <= size * 0.85)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= size * 1.1
    if shape == "bar":
        return (np.abs(u) <= size * 1.3) & (np.abs(v) <= size * 0.4)
    if shape == "triangle":  # equilateral, circumradius ~size
        r = size * 1.15
        inside = v <= r * 0.5
        for k in (1, 2):
            a = 2 * math.pi * k / 3
            inside &= (-u * math.sin(a) + v * math.cos(a)) <= r * 0.5
        return inside
    raise ValueError(shape)


@dataclasses.dataclass
class Layout:
    """Everything a prompt leaves open, drawn once: background, and each item's look and place."""

    background: np.ndarray  # [64, 64, 3]
    items: list  # (colour [3], shape, size, cx, cy, angle), in drawing (occlusion) order
    velocities: np.ndarray | None = None  # [items, 2] pixels per frame (clips only)


OBJECT_SIZES = (8.0, 11.0)  # named objects' size (circle radius; the other shapes scale with it)
# Data sets differ only in what they leave open (the order of draws is the same): v3 draws
# a size in OBJECT_SIZES; v5 draws every object at the largest, so an outline is open only by its
# shift; v6 also puts it at its cell's centre, so a named object's outline is open only by a
# bar's orientation; v7 also lays every bar flat, so none is in an image. v8 is v7 (the same
# images) with clips whose objects move at their cell's velocity, so no outline in a later
# frame is open either.
DATA_SETS = {"v3": OBJECT_SIZES, "v5": (11.0, 11.0), "v6": (11.0, 11.0), "v7": (11.0, 11.0), "v8": (11.0, 11.0)}
DATA_SET = "v8"  # the shipped weights' (FLUX's and Qwen-Image's metadata say v7: the same images)
LEGACY_DATA_SET = "v3"  # what weights and checkpoints without a data_set key were trained on


def object_sizes(data_set: str = DATA_SET) -> tuple[float, float]:
    """The (smallest, largest) object size of ``data_set``."""
    if data_set not in DATA_SETS:
        raise ValueError(f"unknown data set {data_set!r}; use one of {', '.join(DATA_SETS)}")
    return DATA_SETS[data_set]


def trained_data_set(meta: dict | None) -> str:
    """The data set a weights file was trained on (its metadata's ``data_set``); files written
    before the key existed were trained on v3, whatever :data:`DATA_SET` is now."""
    return (meta or {}).get("data_set", LEGACY_DATA_SET)


# The prompt's k-th object sits in the k-th of these quarters of the image (cells of 32
# pixels: top left, bottom right, top right), its centre within CELL_JITTER pixels of the
# cell's centre. (Objects in randomly chosen cells came out as blobs, often in every cell:
# the model had to agree across the image on which object went where before drawing any.)
CELLS = ((IMAGE / 4, IMAGE / 4), (3 * IMAGE / 4, 3 * IMAGE / 4), (3 * IMAGE / 4, IMAGE / 4))
CELL_JITTER = 2.0
UNSHIFTED = ("v6", "v7", "v8")  # data sets whose objects sit at their cell's centre (the shift is drawn, then dropped)
FLAT_BARS = ("v7", "v8")  # data sets whose bars all lie flat (the orientation is drawn, then dropped)
FIXED_MOTION = ("v8",)  # data sets whose clips move each object at its cell's velocity (drawn, then dropped)
# Pixels per frame (64-pixel scale) of the k-th cell's object: over 4 frames it moves 6 pixels
# and stays in its cell.
CELL_VELOCITIES = ((2.0, 0.0), (0.0, -2.0), (0.0, 2.0))
# Upright shapes (bars lie or stand): a square and a diamond, a bar and a square stay different
# shapes at any size, so a check can tell every shape apart.
SHAPE_ANGLES = {"circle": (0.0,), "square": (0.0,), "triangle": (0.0,), "diamond": (0.0,), "bar": (0.0, math.pi / 2)}


def layout(prompt: Prompt, rng: np.random.Generator, data_set: str = DATA_SET) -> Layout:
    """Draw the open attributes of ``prompt`` (the order of draws is part of the data set: keep it).

    Named objects only, in vivid colours on a near-grey background, upright, the k-th in
    the k-th quarter of the image (:data:`CELLS`), so what the prompt names decides what is
    seen; open are the sizes, small shifts, colours and shapes the prompt leaves ``any``,
    the background kind when ``any``, and its colours. (v1 and v2 placed objects anywhere;
    models trained for an hour never committed to a place and drew blobs that grew into
    each other.)
    """
    sizes = object_sizes(data_set)
    kind = prompt.background if prompt.background != ANY else BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    background = _background(rng, kind)
    items = []
    for k, (colour, shape) in enumerate(prompt.objects):
        c = np.array(COLOURS[colour] if colour != ANY else COLOURS[COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]])
        c = np.clip(c + rng.normal(0, 0.04, 3), 0, 1)
        s = shape if shape != ANY else SHAPES[rng.integers(len(SHAPES))]
        size = rng.uniform(*sizes)
        angles = SHAPE_ANGLES[s]
        drawn = angles[rng.integers(len(angles))]
        angle = angles[0] if data_set in FLAT_BARS else drawn
        shift = rng.uniform(-CELL_JITTER, CELL_JITTER, 2)
        cx, cy = np.asarray(CELLS[k]) + (0.0 if data_set in UNSHIFTED else shift)
        items.append((c, s, size, float(cx), float(cy), angle))
    return Layout(background, items)


def draw(lay: Layout, frame: float = 0.0) -> np.ndarray:
    """The image of ``lay`` at ``frame`` (objects moved by their velocities), ``[64, 64, 3]`` in [0, 1]."""
    img = lay.background.copy()
    for k, (c, s, size, cx, cy, angle) in enumerate(lay.items):
        if lay.velocities is not None:
            cx, cy = cx + lay.velocities[k, 0] * frame, cy + lay.velocities[k, 1] * frame
        img[_shape_mask(s, cx, cy, size, angle)] = c
    return img


def object_mask(lay: Layout, frame: float = 0.0) -> np.ndarray:
    """The pixels ``[64, 64]`` (bool) that :func:`draw` paints with an object at ``frame``."""
    mask = np.zeros((IMAGE, IMAGE), dtype=bool)
    for k, (_, s, size, cx, cy, angle) in enumerate(lay.items):
        if lay.velocities is not None:
            cx, cy = cx + lay.velocities[k, 0] * frame, cy + lay.velocities[k, 1] * frame
        mask |= _shape_mask(s, cx, cy, size, angle)
    return mask


def render(prompt: Prompt, rng: np.random.Generator, data_set: str = DATA_SET) -> np.ndarray:
    """One image ``[64, 64, 3]`` in [0, 1] matching ``prompt``; the open attributes come from ``rng``."""
    return draw(layout(prompt, rng, data_set))


def clip_layout(prompt: Prompt, rng: np.random.Generator, data_set: str = DATA_SET) -> Layout:
    """The layout of :func:`layout` with the objects' velocities (pixels per frame) drawn after it:
    open, or their cells' (:data:`FIXED_MOTION`)."""
    lay = layout(prompt, rng, data_set)
    drawn = rng.uniform(-4.0, 4.0, (len(lay.items), 2))
    lay.velocities = np.array(CELL_VELOCITIES[: len(lay.items)]) if data_set in FIXED_MOTION else drawn
    return lay


def draw_clip(lay: Layout, frames: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> np.ndarray:
    """Frames drawn at 64x64 and area-averaged down to ``size`` pixels: ``[frames, size, size, 3]``."""
    if not 0 < size <= IMAGE:
        raise ValueError(f"a clip frame of {size} pixels is not in 1-{IMAGE}; use e.g. 64, 48 or 32")
    clip = np.stack([draw(lay, f) for f in range(frames)])
    fine = math.lcm(IMAGE, size)  # exact box filter: repeat each pixel up to a common grid, average down
    up, down = fine // IMAGE, fine // size
    if up > 1:
        clip = clip.repeat(up, axis=1).repeat(up, axis=2)
    return clip.reshape(frames, size, down, size, down, 3).mean(axis=(2, 4))


def render_clip(prompt: Prompt, rng: np.random.Generator, frames: int = CLIP_FRAMES,
                data_set: str = DATA_SET, size: int = CLIP_SIZE) -> np.ndarray:
    """A clip ``[frames, size, size, 3]``: the layout of :func:`render`, objects moving at their velocities.

    The shipped HunyuanVideo's clip, ``CLIP_FRAMES`` frames of 48x48, is a ``[16, 2, 24, 24]``
    latent: 2 x 12 x 12 = 288 tokens (patch 1x2x2). (Until 2026-12-06: 4 frames of 32x32, 256 tokens.)
    """
    return draw_clip(clip_layout(prompt, rng, data_set), frames, size)


def sample_batch(seed: int, index: int, batch: int, p_any: float = 0.25, frames: int | None = None,
                 masks: bool = False, data_set: str = DATA_SET, clip_size: int = CLIP_SIZE):
    """Deterministic batch number ``index`` of stream ``seed``: (prompts, images ``[B, 64, 64, 3]``).

    With ``frames``, clips ``[B, frames, clip_size, clip_size, 3]`` (:func:`render_clip`) instead. With
    ``masks``, also the objects' pixels at 64x64 (:func:`object_mask`): ``[B, 64, 64]``, or
    ``[B, frames, 64, 64]`` for clips. The batch is the same either way. ``data_set``: :data:`DATA_SETS`.
    """
    rng = np.random.default_rng([seed, index])
    prompts = [random_prompt(rng, p_any) for _ in range(batch)]
    lays = [layout(p, rng, data_set) if frames is None else clip_layout(p, rng, data_set) for p in prompts]
    if frames is None:
        images = torch.from_numpy(np.stack([draw(lay) for lay in lays])).float()
    else:
        images = torch.from_numpy(np.stack([draw_clip(lay, frames, clip_size) for lay in lays])).float()
    if not masks:
        return prompts, images
    if frames is None:
        found = np.stack([object_mask(lay) for lay in lays])
    else:
        found = np.stack([np.stack([object_mask(lay, f) for f in range(frames)]) for lay in lays])
    return prompts, images, torch.from_numpy(found)


def held_out_prompts(count: int, seed: int = 999_999) -> list[Prompt]:
    """Prompts for evaluation (a stream the training never draws: training seeds are < 2**31 with index >= 0)."""
    rng = np.random.default_rng([seed, 7, 7, 7])
    return [random_prompt(rng) for _ in range(count)]


# ----------------------------------------------------------------- latent codec


def decoder_matrix(seed: int = 4321) -> np.ndarray:
    """``M``, ``[16, 12]``: the first 12 columns of a seeded random 16x16 orthogonal matrix.

    The decoder maps a latent pixel ``z`` (16 channels) to a 2x2x3 patch ``M.T @ z``
    (flattened y, x, rgb); ``M.T @ M = I_12``, so the decoder is onto and its least-squares
    inverse is ``x -> M @ x``. Image latents lie in a 12-dim subspace of the 16 channels,
    and all 16 channels carry signal.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(CHANNELS, CHANNELS)))
    q = q * np.sign(np.diag(r))[None]
    return q[:, :PATCH * PATCH * 3]


class PatchCodec:
    """Fixed linear decoder latent ``[B, 16, h, w]`` -> RGB ``[B, 2h, 2w, 3]`` and its least-squares encoder.

    Per latent pixel: ``patch(2x2x3) = 0.5 + M.T z / gain`` (:func:`decoder_matrix`), with
    ``z`` the model's *internal* latent; ``gain`` makes it about unit variance on the data.
    ``encode`` returns internal latents (what training uses); ``decode`` takes the
    user-space latent a KSampler returns (the model's latent format, FLUX's by default,
    ``process_out`` applied) unless ``internal=True``. ``decode(encode(x)) == x`` for every
    image (the decoder is onto), and ``encode(decode(z)) == z`` for latents in the
    decoder's row space. Video latents ``[B, 16, T, h, w]`` decode to ``[B*T, 2h, 2w, 3]``
    (ComfyUI's IMAGE layout for frames) and clips ``[B, T, H, W, 3]`` encode to them.
    """

    upscale = PATCH
    gain = 4.0

    def __init__(self, seed: int = 4321, latent_format=None):
        self.matrix = torch.from_numpy(decoder_matrix(seed)).float()  # [16, 12]
        self.latent_format = latent_format  # a comfy.latent_formats instance; None: FLUX's constants

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 5:  # clips [B, T, H, W, 3] -> [B, 16, T, h, w]
            b, t = images.shape[:2]
            z = self.encode(images.reshape(b * t, *images.shape[2:]))
            return z.reshape(b, t, *z.shape[1:]).transpose(1, 2).contiguous()
        b, h, w, _ = images.shape
        x = (images.float() - 0.5).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, 3)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // PATCH, w // PATCH, -1)  # [B, H/2, W/2, 12]
        z = x @ self.matrix.T * self.gain  # [B, H/2, W/2, 16]
        return z.permute(0, 3, 1, 2).contiguous()

    def decode(self, samples: torch.Tensor, internal: bool = False, clamp: bool = True) -> torch.Tensor:
        """RGB ``[B, H, W, 3]`` (video: ``[B*T, H, W, 3]``) in [0, 1] (ComfyUI IMAGE layout)."""
        z = samples.float().cpu()
        if not internal:
            z = self.to_internal(z)
        if z.ndim == 5:
            z = z.transpose(1, 2).reshape(-1, z.shape[1], *z.shape[3:])
        b, c, h, w = z.shape
        x = z.permute(0, 2, 3, 1) @ self.matrix / self.gain  # [B, h, w, 12]
        x = x.reshape(b, h, w, PATCH, PATCH, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, h * PATCH, w * PATCH, 3)
        x = x + 0.5
        return x.clamp(0, 1) if clamp else x

    def to_user(self, z_internal: torch.Tensor) -> torch.Tensor:
        if self.latent_format is not None:
            return self.latent_format.process_out(z_internal)
        return z_internal / FLUX_SCALE + FLUX_SHIFT

    def to_internal(self, z_user: torch.Tensor) -> torch.Tensor:
        if self.latent_format is not None:
            return self.latent_format.process_in(z_user)
        return (z_user - FLUX_SHIFT) * FLUX_SCALE


# ----------------------------------------------------------------- prompt text (demo node, scripts/demo)

PROMPT_FORM = "<background> background; <colour> <shape>[, <colour> <shape>[, <colour> <shape>]]"
PROMPT_EXAMPLE = "stripes background; red circle, any square"


class PromptSyntaxError(ValueError):
    """A prompt text that :func:`parse_prompt` does not accept; the message lists the allowed words."""


def prompt_vocabulary() -> str:
    """The words a prompt may use, one group per kind (for error messages and tooltips)."""
    return (f"backgrounds: {', '.join(BACKGROUNDS)}, {ANY}; colours: {', '.join(COLOUR_NAMES)}, {ANY}; "
            f"shapes: {', '.join(SHAPES)}, {ANY}")


def _prompt_error(text: str, problem: str) -> PromptSyntaxError:
    return PromptSyntaxError(f"bad prompt {text!r}: {problem}. Write {PROMPT_FORM}, e.g. {PROMPT_EXAMPLE!r}. "
                             f"Allowed words: {prompt_vocabulary()}.")


def _unknown(kind: str, word: str, allowed: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(word, allowed, n=1)
    return f"unknown {kind} {word!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def parse_prompt(text: str) -> Prompt:
    """The :class:`Prompt` of a text in the form :meth:`Prompt.text` writes (strict).

    ``"stripes background; red circle, any square"``: a background kind (or ``any``) and
    the word ``background``, a semicolon, then 1 to 3 objects separated by commas, each a
    colour (or ``any``) and a shape (or ``any``). Case and extra spaces are ignored; any
    other word, a missing part or a fourth object raises :class:`PromptSyntaxError`
    naming the problem and listing the allowed words. ``parse_prompt(p.text()) == p``.
    """
    if not isinstance(text, str):
        raise PromptSyntaxError(f"a prompt must be text, got {type(text).__name__}")
    clean = " ".join(text.lower().split())
    if not clean:
        raise _prompt_error(text, "it is empty")
    parts = clean.split(";")
    if len(parts) == 1:
        raise _prompt_error(text, "no ';' between the background and the objects")
    if len(parts) > 2:
        raise _prompt_error(text, f"{len(parts) - 1} ';' (one separates the background from the objects)")
    head, tail = parts[0].split(), parts[1].strip()
    if len(head) != 2 or head[1] != "background":
        raise _prompt_error(text, f"before ';' write '<background> background', not {parts[0].strip()!r}")
    background = head[0]
    allowed_backgrounds = (*BACKGROUNDS, ANY)
    if background not in allowed_backgrounds:
        raise _prompt_error(text, _unknown("background", background, allowed_backgrounds))
    if not tail:
        raise _prompt_error(text, f"no object after ';' (1 to {MAX_OBJECTS})")
    items = [item.strip() for item in tail.split(",")]
    if len(items) > MAX_OBJECTS:
        raise _prompt_error(text, f"{len(items)} objects; at most {MAX_OBJECTS}")
    allowed_colours, allowed_shapes = (*COLOUR_NAMES, ANY), (*SHAPES, ANY)
    objects = []
    for number, item in enumerate(items, 1):
        words = item.split()
        if len(words) != 2:
            shown = repr(item) if item else "empty"
            raise _prompt_error(text, f"object {number} is {shown}; each object is '<colour> <shape>'")
        colour, shape = words
        if colour in SHAPES and shape in COLOUR_NAMES:
            raise _prompt_error(text, f"object {number} {item!r}: the colour comes first ({shape} {colour})")
        if colour not in allowed_colours:
            raise _prompt_error(text, f"object {number}: {_unknown('colour', colour, allowed_colours)}")
        if shape not in allowed_shapes:
            raise _prompt_error(text, f"object {number}: {_unknown('shape', shape, allowed_shapes)}")
        objects.append((colour, shape))
    return Prompt(background, tuple(objects))
