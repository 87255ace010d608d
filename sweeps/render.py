"""Cheap per-trial images drawn with Pillow (a few ms each, no matplotlib on the hot path)."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Mapping, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_plot(path, series: Mapping[str, Tuple[Sequence[float], Sequence[float]]], *, title: str,
              xlabel: str, ylabel: str, size=(520, 340)) -> Path:
    """A small line chart: series {label: (xs, ys)}; non-finite points are skipped."""
    font = ImageFont.load_default()
    W, H = size
    left, right, top, bottom = 60, 15, 28, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y)]
    d.text((left, 8), title, fill="black", font=font)
    d.rectangle([left, top, W - right, H - bottom], outline=(80, 80, 80))
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-12)

        def to_px(x, y):
            return (left + (x - x0) / (x1 - x0) * (W - left - right),
                    H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

        for i, (label, (xs, ys)) in enumerate(series.items()):
            color = _COLORS[i % len(_COLORS)]
            line = [to_px(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if len(line) > 1:
                d.line(line, fill=color, width=2)
            elif line:
                d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=color)
            if len(series) > 1:
                d.text((W - right - 150, top + 4 + 12 * i), label, fill=color, font=font)
        for frac in (0.0, 0.5, 1.0):
            y = y0 + frac * (y1 - y0)
            d.text((4, to_px(x0, y)[1] - 6), _fmt(y), fill="black", font=font)
            x = x0 + frac * (x1 - x0)
            d.text((to_px(x, y0)[0] - 10, H - bottom + 4), _fmt(x), fill="black", font=font)
    d.text((W // 2 - 20, H - 14), xlabel, fill="black", font=font)
    d.text((4, top - 14), ylabel, fill="black", font=font)
    path = Path(path)
    img.save(path, format="PNG", compress_level=1)  # fast; these are small
    return path


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@functools.lru_cache(maxsize=8)
def _confusion_frame(class_names: Tuple[str, ...], cell: int) -> Image.Image:
    """The class-name labels of a confusion-matrix image, drawn once per set of names."""
    font = ImageFont.load_default()
    C = len(class_names)
    label_w = 8 * max(len(n) for n in class_names) + 10
    img = Image.new("RGB", (label_w + C * cell + 10, 30 + label_w + C * cell + 10), "white")
    d = ImageDraw.Draw(img)
    top = 30 + label_w
    for i, name in enumerate(class_names):
        d.text((4, top + i * cell + cell // 2 - 6), name, fill="black", font=font)
        # Column names written vertically: one character per line keeps it legible without rotation.
        for j, ch in enumerate(name[:8]):
            d.text((label_w + i * cell + cell // 2 - 3, 30 + j * 11), ch, fill="black", font=font)
    return img


def confusion_matrix_image(path, matrix: np.ndarray, class_names: Sequence[str], *, title: str, cell: int = 34) -> Path:
    """Heat map of a confusion matrix (C, C) with counts, class names on both axes."""
    font = ImageFont.load_default()
    digits = ImageFont.load_default_imagefont()  # the counts: 5x faster than the FreeType default
    C = matrix.shape[0]
    img = _confusion_frame(tuple(class_names), cell).copy()
    label_w = 8 * max(len(n) for n in class_names) + 10
    d = ImageDraw.Draw(img)
    d.text((6, 6), title, fill="black", font=font)
    row_sums = matrix.sum(axis=1, keepdims=True).clip(min=1)
    frac = matrix / row_sums
    top = 30 + label_w
    for i in range(C):
        for j in range(C):
            shade = int(255 * (1 - frac[i, j]))
            color = (shade, shade, 255) if i != j else (shade, 255, shade)
            x, y = label_w + j * cell, top + i * cell
            d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color, outline=(200, 200, 200))
            d.text((x + 3, y + cell // 2 - 6), str(int(matrix[i, j])), fill="black" if shade > 110 else "white",
                   font=digits)
    path = Path(path)
    img.save(path, format="PNG", compress_level=1)  # fast; these are small
    return path
