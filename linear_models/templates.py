"""Class templates: each class's weights (bias row dropped) seen as an image."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .png import write_png

__all__ = ["class_templates", "template_grid", "save_template_grid"]


def class_templates(W: torch.Tensor, image_shape: Sequence[int]) -> np.ndarray:
    """Weights as uint8 images, one per class, each rescaled to 0..255 on its own range.

    Args: W (D, C) with D = H*W*ch or H*W*ch + 1 (a bias row, dropped); image_shape (H, W, ch).
    Returns: (C, H, W, ch) uint8.
    """
    H, Wd, ch = (int(s) for s in image_shape)
    pixels = H * Wd * ch
    if W.shape[0] not in (pixels, pixels + 1):
        raise ValueError(f"W has {W.shape[0]} rows but image_shape {tuple(image_shape)} needs "
                         f"{pixels} (or {pixels + 1} with the bias row)")
    w = W[:pixels].detach().to("cpu", torch.float64).t().reshape(-1, H, Wd, ch)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    scaled = 255.0 * (w - lo) / (hi - lo).clamp(min=1e-12)
    return scaled.round().clamp(0, 255).to(torch.uint8).numpy()


def template_grid(W: torch.Tensor, image_shape: Sequence[int], class_names: Optional[Sequence[str]] = None,
                  *, scale: int = 4, columns: Optional[int] = None, title: Optional[str] = None):
    """A labelled grid of class templates as a PIL image (one tile per class, name below)."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = class_templates(W, image_shape)
    C, H, Wd, ch = tiles.shape
    names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(C))
    if len(names) != C:
        raise ValueError(f"class_names has {len(names)} names but W has {C} classes")
    cols = columns or min(C, 10)
    layout = _layout(names, H, Wd, scale, cols, bool(title))
    canvas = layout.background.copy()  # (height, width, 3) uint8: white with the class names
    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2)  # (C, H*scale, W*scale, ch), nearest
    for c, (x, y) in enumerate(layout.origins):
        canvas[y:y + H * scale, x:x + Wd * scale] = big[c] if ch == 3 else big[c, :, :, :1]
    image = Image.fromarray(canvas, "RGB")
    if title:
        ImageDraw.Draw(image).text((_PAD, 2), title, fill="black", font=ImageFont.load_default())
    return image


_PAD, _LABEL_H = 4, 14


class _Layout:
    """Where each tile goes on a grid, and the grid's background with the labels drawn."""

    def __init__(self, names, H: int, Wd: int, scale: int, cols: int, titled: bool):
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.load_default()
        tw, th = Wd * scale, H * scale
        top = 16 if titled else 0
        cell_w = max(tw, 8 * max(len(n) for n in names)) + _PAD
        rows = (len(names) + cols - 1) // cols
        image = Image.new("RGB", (cols * cell_w + _PAD, top + rows * (th + _LABEL_H + _PAD) + _PAD), "white")
        draw = ImageDraw.Draw(image)
        self.origins = []
        for c, name in enumerate(names):
            r, q = divmod(c, cols)
            x = _PAD + q * cell_w + (cell_w - _PAD - tw) // 2
            y = top + _PAD + r * (th + _LABEL_H + _PAD)
            self.origins.append((x, y))
            text_w = draw.textlength(name, font=font)
            draw.text((_PAD + q * cell_w + (cell_w - _PAD - text_w) / 2, y + th + 2), name, fill="black", font=font)
        self.background = np.asarray(image).copy()


@functools.lru_cache(maxsize=16)
def _layout(names, H: int, Wd: int, scale: int, cols: int, titled: bool) -> _Layout:
    """Drawn once per grid shape: a sweep draws thousands of grids with the same labels."""
    return _Layout(names, H, Wd, scale, cols, titled)


def save_template_grid(W: torch.Tensor, image_shape: Sequence[int], path, class_names=None, **kwargs) -> Path:
    """Write :func:`template_grid` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(path, np.asarray(template_grid(W, image_shape, class_names, **kwargs).convert("RGB")))
