"""RawDataset: the decoded images and labels every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import check

__all__ = ["RawDataset", "SPLITS"]

SPLITS = ("train", "test")


@dataclass
class RawDataset:
    """Decoded images and labels, as loaded from disk.

    X_train (N, H, W, C) uint8, y_train (N,) int64, X_test (M, H, W, C) uint8, y_test (M,) int64;
    ``class_names[k]`` names label k. C is 3 (RGB) or 1 (grayscale).
    Construction checks shapes and that every label is in [0, len(class_names)) and raises
    ValueError otherwise (the loaders check their files first and raise DataError naming them).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    cache_path: Optional[Path] = field(default=None, compare=False, repr=False)  # its cache folder, if any

    def __post_init__(self) -> None:
        self.class_names = [str(name) for name in self.class_names]
        check(len(self.class_names) >= 1, "class_names must name at least one class, got []", ValueError)
        for split in SPLITS:
            setattr(self, f"y_{split}", self._checked_split(split))
        check(
            self.X_train.shape[1:] == self.X_test.shape[1:],
            f"X_train and X_test must hold images of one shape (H, W, C), "
            f"got {self.X_train.shape[1:]} and {self.X_test.shape[1:]}",
            ValueError,
        )

    def _checked_split(self, split: str) -> np.ndarray:
        """Check X_<split> (N, H, W, C) uint8 and y_<split> (N,); return y as int64."""
        k = len(self.class_names)
        X, y = getattr(self, f"X_{split}"), np.asarray(getattr(self, f"y_{split}"))
        check(
            isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim == 4,
            f"X_{split} must be a uint8 array of shape (N, H, W, C), "
            f"got {getattr(X, 'dtype', type(X).__name__)} {getattr(X, 'shape', '')}",
            ValueError,
        )
        check(
            y.shape == (len(X),) and (y.dtype.kind in "iu" or y.size == 0),
            f"y_{split} must be an integer array of shape ({len(X)},) to match X_{split}, "
            f"got {y.dtype} {y.shape}",
            ValueError,
        )
        y = y.astype(np.int64, copy=False)
        if y.size:
            lo, hi = int(y.min()), int(y.max())
            check(
                lo >= 0 and hi < k,
                f"y_{split} labels must be in [0, {k - 1}] for {k} classes, got {lo if lo < 0 else hi}",
                ValueError,
            )
        return y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(int(s) for s in self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
