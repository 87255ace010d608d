"""Class templates: each class's weights (bias row dropped) seen as an image."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

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
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names has {len(names)} names but W has {C} classes")
    cols = columns or min(C, 10)
    rows = (C + cols - 1) // cols
    font = ImageFont.load_default()
    tw, th = Wd * scale, H * scale
    label_h, pad = 14, 4
    top = 16 if title else 0
    cell_w = max(tw, 8 * max(len(n) for n in names)) + pad
    canvas = Image.new("RGB", (cols * cell_w + pad, top + rows * (th + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)
    for c in range(C):
        r, q = divmod(c, cols)
        tile = tiles[c] if ch == 3 else tiles[c, :, :, 0]
        img = Image.fromarray(tile, "RGB" if ch == 3 else "L").resize((tw, th), Image.NEAREST)
        x = pad + q * cell_w + (cell_w - pad - tw) // 2
        y = top + pad + r * (th + label_h + pad)
        canvas.paste(img, (x, y))
        text_w = draw.textlength(names[c], font=font)
        draw.text((pad + q * cell_w + (cell_w - pad - text_w) / 2, y + th + 2), names[c], fill="black", font=font)
    return canvas


def save_template_grid(W: torch.Tensor, image_shape: Sequence[int], path, class_names=None, **kwargs) -> Path:
    """Write :func:`template_grid` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    template_grid(W, image_shape, class_names, **kwargs).save(path, format="PNG", compress_level=1)
    return path
