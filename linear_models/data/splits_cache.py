"""Preprocessed CPU splits cached beside the decoded arrays they come from, memory-mapped when read.

A launch on the CPU then starts from the page cache: no float rows to fill in fresh memory, and
workers on one machine share one copy of the pages (figures: docs/overhead.md).
A folder ``splits-<key>`` inside the decoded arrays' cache folder, keyed by preprocess's
parameters; it goes when its source's cache does (a changed source has a new cache folder), and
only the ``MAX_VARIANTS`` most recently used parameter sets are kept. The first preprocessing of a
variant writes it in a background thread, while training starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .cache import replace_folder
from .preprocess import preprocess
from .raw import RawDataset

__all__ = ["cached_preprocess", "MAX_VARIANTS", "WRITER_THREAD"]

MAX_VARIANTS = 2  # parameter sets kept per source (each a full float copy of the splits on disk)
WRITER_THREAD = "splits-cache-writer"

_SPLITS_VERSION = 1  # bump when preprocess's output changes
_TENSORS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean")
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)  # what .npy files hold


def cached_preprocess(raw: RawDataset, **params) -> dict:
    """``preprocess(raw, **params)`` on the CPU, from ``raw``'s cache folder when it was done before.

    Without a cache folder (the raw arrays were decoded with the cache off) or for a dtype numpy
    cannot store, the splits are computed each time. Tensors read from the cache are backed by
    copy-on-write memory maps: the same values, read-only in effect (nothing writes the splits).
    """
    dtype = params.get("dtype", torch.float32)
    on_cpu = torch.device(params.get("device", "cpu")).type == "cpu"
    if raw.cache_path is None or dtype not in _NUMPY_DTYPES or not on_cpu:
        return preprocess(raw, **params)
    folder = Path(raw.cache_path) / f"splits-{_key(params)}"
    out = _read(folder)
    if out is None:
        out = preprocess(raw, **params)
        # Not a daemon: the interpreter lets it finish (a kill leaves only a temporary folder).
        threading.Thread(target=_write, args=(folder, out), name=WRITER_THREAD).start()
    return out


def _key(params: dict) -> str:
    described = {k: str(v) for k, v in params.items() if k != "device"}
    text = json.dumps({"version": _SPLITS_VERSION, **described}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(folder: Path) -> dict | None:
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        out = {name: torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False))
               for name in _TENSORS}
        out["class_names"], out["image_shape"] = list(meta["class_names"]), tuple(meta["image_shape"])
        os.utime(folder)  # recently used: kept by _evict
        return out
    except Exception as e:  # any unreadable cache -> preprocess again
        warnings.warn(f"ignoring unreadable cache folder {folder} ({type(e).__name__}: {e}); preprocessing again")
        return None


def _write(folder: Path, splits: dict) -> None:
    """Atomically, as the decoded arrays are written (a temporary folder renamed into place)."""
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
        for name in _TENSORS:
            np.save(tmp / f"{name}.npy", splits[name].numpy(), allow_pickle=False)
        meta = {"class_names": splits["class_names"], "image_shape": list(splits["image_shape"])}
        (tmp / "meta.json").write_text(json.dumps(meta))
        replace_folder(tmp, folder)
        _evict(folder.parent)
    except OSError as e:
        warnings.warn(f"could not write cache folder {folder} ({e}); the splits are preprocessed every time")
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _evict(source_folder: Path) -> None:
    """Keep the MAX_VARIANTS most recently used splits folders (and no leftover temporary ones)."""
    for leftover in source_folder.glob("splits-*.tmp"):
        if leftover.stat().st_mtime < time.time() - 3600:  # a writer killed an hour ago or more
            shutil.rmtree(leftover, ignore_errors=True)
    variants = sorted((p for p in source_folder.glob("splits-*") if p.is_dir() and "." not in p.name),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in variants[MAX_VARIANTS:]:
        shutil.rmtree(old, ignore_errors=True)

