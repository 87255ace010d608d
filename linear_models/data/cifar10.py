"""CIFAR-10 in the official python format: the cifar-10-python.tar.gz archive or its folder."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .cache import PathLike, cached, file_identity
from .errors import DataError, DataNotFoundError, check
from .raw import RawDataset
from .safe_io import ARCHIVE_READ_ERRORS, check_inside, corrupt_archive_error, load_pickle, safe_extract, verify_md5
from .safe_io import download as _download

__all__ = ["load_cifar10", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_ARCHIVE", "CIFAR10_FOLDER"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_FILES = (*_CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")
_LAYOUT = f"a {CIFAR10_FOLDER} folder holds data_batch_1 ... data_batch_5, test_batch and batches.meta"


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _get(batch: dict, key: str, source: str):
    """``batch[b'key']`` or ``batch['key']``: official pickles have bytes keys, re-pickles str."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{source}: missing key {key!r}, found {sorted(_as_str(k) for k in batch)}")


def _read_cifar_batch(path: Path, num_classes: int, shown: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> X (N, 32, 32, 3) uint8, y (N,) int64 with labels in [0, num_classes).

    Each row of b'data' holds 3072 bytes, channel-major: 1024 red, 1024 green, 1024 blue,
    each a 32x32 image in row-major order. ``shown`` names the file in messages.
    """
    batch = load_pickle(path, shown)
    data = np.asarray(_get(batch, "data", shown))
    labels = np.asarray(_get(batch, "labels", shown), dtype=np.int64)
    check(
        data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32,
        f"{shown}: 'data' must be a uint8 array of shape (N, 3072), got {data.dtype} {data.shape}",
    )
    check(
        labels.shape == (len(data),),
        f"{shown}: 'labels' must have {len(data)} entries to match 'data', got {labels.shape}",
    )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{shown}: label {labels[bad[0]]} at row {bad[0]} is out of range: batches.meta "
                        f"names {num_classes} classes, so labels must be in [0, {num_classes - 1}]")
    X = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    return np.ascontiguousarray(X), labels


def _read_cifar_folder(folder: Path, shown: str | None = None) -> RawDataset:
    """Decode batches.meta, data_batch_1..5 and test_batch from a cifar-10-batches-py folder.

    ``shown`` names the folder in messages (e.g. ``archive.tar.gz:cifar-10-batches-py``).
    """
    shown = shown or str(folder)
    meta = load_pickle(folder / "batches.meta", f"{shown}/batches.meta")
    names = [_as_str(n) for n in _get(meta, "label_names", f"{shown}/batches.meta")]
    train = [_read_cifar_batch(folder / name, len(names), f"{shown}/{name}") for name in _CIFAR10_TRAIN_BATCHES]
    X_test, y_test = _read_cifar_batch(folder / "test_batch", len(names), f"{shown}/test_batch")
    return RawDataset(
        X_train=np.concatenate([X for X, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        X_test=X_test,
        y_test=y_test,
        class_names=names,
    )


def _check_cifar_folder(folder: Path, shown: str | None = None) -> None:
    """DataError naming the first missing batch file, or a symlink that leaves the folder."""
    shown = shown or str(folder)
    missing = [name for name in _CIFAR10_FILES if not (folder / name).is_file()]
    also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
    check(not missing, f"{shown}/{missing[0] if missing else ''}: file missing{also}; {_LAYOUT}")
    for name in _CIFAR10_FILES:
        if (folder / name).is_symlink():
            check_inside(folder / name, folder)


def _cifar_folder_identity(folder: Path) -> str:
    _check_cifar_folder(folder)
    return "\n".join(file_identity(folder / name) for name in _CIFAR10_FILES)


def _extract_folder(archive: Path) -> Path:
    """A new temporary folder for extracting ``archive``: beside it, else in the system temp dir."""
    try:
        return Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=archive.parent))
    except OSError:  # read-only folder: extract to the system temp dir and discard afterwards
        return Path(tempfile.mkdtemp(prefix="cifar-10-extract-"))


def _read_cifar_archive(archive: Path, md5: str) -> RawDataset:
    """Verify ``archive``'s md5, extract it safely beside itself and decode the batches.

    The extraction goes to a temporary folder first, so a half-extracted or refused archive
    never looks like a ready cifar-10-batches-py folder; a good one is kept beside the archive.
    """
    verify_md5(archive, md5)
    tmp = _extract_folder(archive)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                safe_extract(tar, tmp, archive)
        except ARCHIVE_READ_ERRORS as e:  # tarfile.open of a damaged file
            raise corrupt_archive_error(archive, e) from None
        nested = (tmp / CIFAR10_FOLDER).is_dir()
        folder = tmp / CIFAR10_FOLDER if nested else tmp
        shown = f"{archive}:{CIFAR10_FOLDER if nested else '.'}"
        _check_cifar_folder(folder, shown)  # clear error for an archive without the batches
        raw = _read_cifar_folder(folder, shown)
        keep = archive.parent / CIFAR10_FOLDER
        if tmp.parent == archive.parent and folder != tmp and not keep.exists():
            os.replace(folder, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw


def _locate_cifar10(root: Path) -> tuple[str, Path] | None:
    """("folder" | "archive", path) for each accepted form of ``root``, else None."""
    if root.is_file():
        return "archive", root
    if (root / "data_batch_1").is_file():
        return "folder", root
    if (root / CIFAR10_FOLDER / "data_batch_1").is_file():
        return "folder", root / CIFAR10_FOLDER
    if (root / CIFAR10_ARCHIVE).is_file():
        return "archive", root / CIFAR10_ARCHIVE
    return None


def _not_found(root: Path, url: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{root}: CIFAR-10 not found at this path: pass a {CIFAR10_FOLDER} folder, a folder containing it, "
        f"the {CIFAR10_ARCHIVE} archive or a folder containing it; or call "
        f"load_cifar10({str(root)!r}, download=True) to download it from {url} (163 MB). "
        "A .tar.gz of PNG/JPEG class folders loads with load_image_folder."
    )


def load_cifar10(
    root: PathLike,
    download: bool = False,
    *,
    md5: str = CIFAR10_MD5,
    url: str = CIFAR10_URL,
    cache_dir: PathLike | bool | None = None,
) -> RawDataset:
    """Load CIFAR-10 from the official python batches.

    Args:
        root: a ``cifar-10-batches-py`` folder, a folder containing it, the
            ``cifar-10-python.tar.gz`` archive, or a folder containing that archive.
        download: fetch the archive from ``url`` into ``root`` when none of the above exist.
        md5: the archive must have this md5 before it is used (tests pass their own archives).
        url: where to download from (default CIFAR10_URL; any URL urlopen takes, file:// too).
        cache_dir: where decoded arrays are cached; None -> ``$LINEAR_SWEEPS_CACHE`` or
            ``~/.cache/linear-sweeps``; False disables the cache.

    Returns:
        RawDataset with X_train (50000, 32, 32, 3) uint8, y_train (50000,), X_test (10000, 32, 32, 3),
        y_test (10000,) and the 10 class names from batches.meta.

    Raises:
        DataNotFoundError (a DataError and a FileNotFoundError): nothing at ``root`` and no download.
        DataError: a batch file missing from the folder, a damaged or unsafe pickle
            (UnsafePickleError), an md5 mismatch, a truncated archive, an unsafe archive member,
            a label out of range. The message starts with the file it is about.
        OSError: the download failed (urllib's URLError, ConnectionError when interrupted).

    Safety: batches are unpickled with a restricted unpickler (numpy arrays only). Nothing
    outside the dataset root is read: archive members that are absolute, contain '..' or
    link outside the archive are refused, and a batch file that is a symlink must resolve
    inside its folder.
    """
    root = Path(root).expanduser()
    found = _locate_cifar10(root)
    if found is None and download:
        archive = root if root.name.endswith((".tar.gz", ".tgz")) else root / CIFAR10_ARCHIVE
        _download(url, archive, md5)
        found = ("archive", archive)
    if found is None:
        raise _not_found(root, url)
    kind, path = found
    path = path.resolve()
    if kind == "folder":
        identity = _cifar_folder_identity(path)
        return cached(cache_dir, "cifar10", identity, lambda: _read_cifar_folder(path))
    identity = f"{file_identity(path)}\nmd5={md5.lower()}"
    return cached(cache_dir, "cifar10", identity, lambda: _read_cifar_archive(path, md5))
