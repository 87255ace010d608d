"""The decoded-array cache: one uncompressed ``.npz`` per source, keyed by its identity.

A source's identity is its resolved path with the sizes and modification times of its files,
so any change to the source decodes it again. An unreadable cache file is ignored (with a
warning) and rewritten; writes are atomic.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np

from .raw import RawDataset

__all__ = ["CACHE_ENV", "PathLike", "file_identity", "cached"]

PathLike = Union[str, os.PathLike]

CACHE_ENV = "LINEAR_SWEEPS_CACHE"
_CACHE_VERSION = 1  # bump when the decoded arrays or the .npz layout change


def file_identity(path: Path) -> str:
    """``path``, its size and mtime: changes whenever the file does."""
    st = path.stat()
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}"


def _resolve_cache_dir(cache_dir: PathLike | bool | None) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        env = os.environ.get(CACHE_ENV)
        return Path(env).expanduser() if env else Path.home() / ".cache" / "linear-sweeps"
    return Path(cache_dir).expanduser()


def _cache_read(path: Path) -> RawDataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return RawDataset(
                X_train=z["X_train"], y_train=z["y_train"], X_test=z["X_test"], y_test=z["y_test"],
                class_names=[str(name) for name in z["class_names"]],
            )
    except Exception as e:  # any unreadable cache (truncated zip, missing key, bad shapes) -> decode again
        warnings.warn(f"ignoring unreadable cache file {path} ({type(e).__name__}: {e}); decoding the source again")
        return None


def _cache_write(path: Path, raw: RawDataset) -> None:
    """Write ``raw`` to ``path`` atomically: a temporary file in the same folder, then os.replace,
    so a concurrent or interrupted writer never leaves a half-written cache behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(  # uncompressed: np.load then reads at disk/page-cache speed
                f, X_train=raw.X_train, y_train=raw.y_train, X_test=raw.X_test, y_test=raw.y_test,
                class_names=np.array(raw.class_names, dtype=str),
            )
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write cache file {path} ({e}); loading will decode the source every time")
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def cached(
    cache_dir: PathLike | bool | None, kind: str, identity: str, decode: Callable[[], RawDataset]
) -> RawDataset:
    """Return the cached arrays for (kind, identity), or ``decode()`` them and cache the result.

    cache_dir: a folder; None or True -> ``$LINEAR_SWEEPS_CACHE`` or ``~/.cache/linear-sweeps``;
    False -> no cache (always decode).
    """
    folder = _resolve_cache_dir(cache_dir)
    if folder is None:
        return decode()
    key = hashlib.sha256(f"{kind}\nversion={_CACHE_VERSION}\n{identity}".encode()).hexdigest()[:24]
    path = folder / f"{kind}-{key}.npz"
    raw = _cache_read(path)
    if raw is None:
        raw = decode()
        _cache_write(path, raw)
    return raw
