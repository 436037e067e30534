"""Small pictures for nodes' IMAGE outputs (ComfyUI IMAGE: ``[1, H, W, 3]`` float in [0, 1]).

Drawn with Pillow, which ComfyUI itself requires, so no plotting library is added.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 27, 33)
FOREGROUND = (225, 228, 232)
GRID = (60, 66, 76)
POINT = (79, 195, 247)
BEST = (255, 183, 77)


def to_image_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def trials_plot(values: Sequence[float], title: str, ylabel: str, width: int = 640, height: int = 360) -> torch.Tensor:
    """Objective per trial (points) and best so far (a step line)."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(12)
    draw.text((10, 8), title, fill=FOREGROUND, font=_font(14))
    left, right, top, bottom = 78, width - 15, 36, height - 36
    draw.rectangle((left, top, right, bottom), outline=GRID)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        draw.text((left + 10, top + 10), "no completed trials", fill=FOREGROUND, font=font)
        return to_image_tensor(image)
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    count = len(values)

    def xy(index: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (index + 0.5) / max(count, 1)
        y = bottom - (bottom - top) * (value - lo) / (hi - lo)
        return x, y

    for frac in (0.0, 0.5, 1.0):
        value = lo + frac * (hi - lo)
        y = bottom - frac * (bottom - top)
        draw.line((left, y, right, y), fill=GRID)
        draw.text((4, y - 7), f"{value:.4g}", fill=FOREGROUND, font=font)
    best_line, best = [], math.inf
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        x, y = xy(i, v)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=POINT)
        best = min(best, v)
        best_line.append(xy(i, best))
    if len(best_line) > 1:
        steps = []
        for (x0, y0), (x1, y1) in zip(best_line, best_line[1:]):
            steps += [(x0, y0), (x1, y0), (x1, y1)]
        draw.line(steps, fill=BEST, width=2)
    draw.text((left, bottom + 8), f"trial (1..{count})   - best so far", fill=FOREGROUND, font=font)
    draw.text((right - 140, 10), ylabel, fill=FOREGROUND, font=font)
    return to_image_tensor(image)


def labelled_row(images: Sequence[torch.Tensor], labels: Sequence[str], scale_to: int = 256) -> torch.Tensor:
    """Images ``[H, W, 3]`` side by side, each scaled to ``scale_to`` pixels high, with a caption."""
    tiles = []
    for tensor, label in zip(images, labels):
        array = (tensor.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        tile = Image.fromarray(array)
        factor = scale_to / tile.height
        tile = tile.resize((max(1, round(tile.width * factor)), scale_to), Image.NEAREST)
        canvas = Image.new("RGB", (tile.width, scale_to + 40), BACKGROUND)
        canvas.paste(tile, (0, 0))
        ImageDraw.Draw(canvas).multiline_text((6, scale_to + 4), label, fill=FOREGROUND, font=_font(12))
        tiles.append(canvas)
    row = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), tiles[0].height), BACKGROUND)
    x = 0
    for tile in tiles:
        row.paste(tile, (x, 0))
        x += tile.width + 8
    return to_image_tensor(row)


def text_card(text: str, width: int = 512, height: int = 160) -> torch.Tensor:
    """An IMAGE ``[1, H, W, 3]`` with ``text`` on it, for an output that has no picture to show this time."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(canvas).multiline_text((12, 12), text, fill=FOREGROUND, font=_font(13))
    return to_image_tensor(canvas)


HEATMAP_SIZE = 512
# ----------------------------------------------------------------- the cost heatmap (pure numpy)

# viridis, sampled at 9 points; linear interpolation in between
_VIRIDIS = np.array([
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64) / 255.0
_FORBIDDEN = np.array([0.16, 0.16, 0.16])  # inf: outside the window, or i >= j
_FREE = np.array([0.45, 0.45, 0.45])  # cost 0: j = i + 1, nothing skipped
_PATH = np.array([1.0, 1.0, 1.0])
_BAR_GAP, _BAR_WIDTH = 6, 16


def _colormap(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(u).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (u - lo)[..., None]
    return _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac


def heatmap_shape(steps: int, size: int = HEATMAP_SIZE) -> tuple[int, int, int, int]:
    """Shape ``[1, H, W, 3]`` of :func:`cost_heatmap` for ``steps`` steps."""
    cell = max(1, size // steps)
    return (1, steps * cell, steps * cell + _BAR_GAP + _BAR_WIDTH, 3)


def cost_heatmap(costs: np.ndarray, compute: tuple[int, ...] | None = None, size: int = HEATMAP_SIZE) -> torch.Tensor:
    """The cost matrix as a ComfyUI IMAGE ``[1, H, W, 3]`` (0..1), log colour scale, path drawn on top.

    Row i, column j is edge i -> j. Dark grey: forbidden; mid grey: cost 0 (j = i + 1);
    viridis from the smallest (dark) to the largest (yellow) positive cost, log scale.
    The chosen path's edges are framed in white and joined by a white staircase through
    the diagonal (each computed step). The strip on the right is the colour scale.
    """
    c = np.asarray(costs, dtype=np.float64)
    n = c.shape[0]
    cell = max(1, size // n)
    positive = c[np.isfinite(c) & (c > 0)]
    cells = np.empty((n, n, 3))
    cells[:] = _FORBIDDEN
    if positive.size:
        lo, hi = np.log10(positive.min()), np.log10(positive.max())
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (np.log10(c) - lo) / (hi - lo) if hi > lo else np.full_like(c, 0.5)
        colored = np.isfinite(c) & (c > 0)
        cells[colored] = _colormap(u[colored])
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    cells[upper & np.isfinite(c) & (c <= 0)] = _FREE
    cells[~upper] = _FORBIDDEN
    img = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)

    if compute is not None and len(compute) >= 2:
        border = max(1, cell // 8)
        line = max(1, cell // 10)

        def center(k: int) -> int:
            return k * cell + cell // 2

        for a, b in zip(compute, compute[1:]):
            y0, x0 = a * cell, b * cell
            block = img[y0:y0 + cell, x0:x0 + cell]
            block[:border] = _PATH
            block[-border:] = _PATH
            block[:, :border] = _PATH
            block[:, -border:] = _PATH
        # staircase: (a, a) -> right to (a, b) -> down to (b, b) -> ...
        half = line // 2
        for a, b in zip(compute, compute[1:]):
            ya, xa, xb, yb = center(a), center(a), center(b), center(b)
            img[ya - half:ya - half + line, xa:xb + 1] = _PATH
            img[ya:yb + 1, xb - half:xb - half + line] = _PATH

    height = n * cell
    bar = _colormap(np.linspace(1.0, 0.0, height))[:, None, :].repeat(_BAR_WIDTH, axis=1)
    gap = np.zeros((height, _BAR_GAP, 3))
    out = np.concatenate([img, gap, bar], axis=1).astype(np.float32)
    return torch.from_numpy(out)[None]
