"""The decoded-array cache: one folder of ``.npy`` files per source, keyed by its identity.

A source's identity is its resolved path with the sizes and modification times of its files,
so any change to the source decodes it again. The arrays are memory-mapped when read: a load
costs no copy and no fresh memory (the pages are the page cache's; see docs/overhead.md). An
unreadable cache is ignored (with a warning) and rewritten; writes are atomic (a folder renamed
into place).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np

from .raw import RawDataset

__all__ = ["CACHE_ENV", "PathLike", "default_cache_dir", "file_identity", "cached", "replace_folder"]

PathLike = Union[str, os.PathLike]

CACHE_ENV = "LINEAR_SWEEPS_CACHE"
_CACHE_VERSION = 2  # bump when the decoded arrays or the cache layout change
_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "class_names")


def file_identity(path: Path) -> str:
    """``path``, its size and mtime: changes whenever the file does."""
    st = path.stat()
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}"


def _resolve_cache_dir(cache_dir: PathLike | bool | None) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return default_cache_dir()
    return Path(cache_dir).expanduser()


def default_cache_dir() -> Path:
    """``$LINEAR_SWEEPS_CACHE``, else ``~/.cache/linear-sweeps`` (decoded data, the MLflow store template)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "linear-sweeps"


def _cache_read(path: Path) -> RawDataset | None:
    """The arrays in the folder ``path`` (read-only memory maps), or None if it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
        return RawDataset(
            X_train=arrays["X_train"], y_train=arrays["y_train"], X_test=arrays["X_test"], y_test=arrays["y_test"],
            class_names=[str(name) for name in arrays["class_names"]], cache_path=path,
        )
    except Exception as e:  # any unreadable cache (truncated file, missing array, bad shapes) -> decode again
        warnings.warn(f"ignoring unreadable cache file {path} ({type(e).__name__}: {e}); decoding the source again")
        return None


def _cache_write(path: Path, raw: RawDataset) -> None:
    """Write ``raw`` to the folder ``path`` atomically: a temporary folder beside it, renamed into
    place, so a concurrent or interrupted writer never leaves a half-written cache behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
        arrays = {"X_train": raw.X_train, "y_train": raw.y_train, "X_test": raw.X_test, "y_test": raw.y_test,
                  "class_names": np.array(raw.class_names, dtype=str)}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        replace_folder(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write cache file {path} ({e}); loading will decode the source every time")
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``. Whatever is there already (an unreadable cache, or a concurrent
    writer's, which holds the same arrays) is moved aside and removed first; a concurrent writer
    that lands its folder between the two steps wins."""
    if path.exists() or path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".old", dir=path.parent))
        try:
            os.replace(path, old / "cache")
        except FileNotFoundError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(new, path)
    except OSError:
        if not path.is_dir():  # not a concurrent writer's folder: a real failure
            raise


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
    path = folder / f"{kind}-{key}"
    raw = _cache_read(path)
    if raw is None:
        raw = decode()
        _cache_write(path, raw)
        if path.is_dir():
            raw.cache_path = path
    return raw
