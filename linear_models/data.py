"""Load CIFAR-10 and preprocess it the way the EECS 498-007 / CS231n linear-classifier
assignment does.

    raw = load_cifar10("~/data", download=True)          # official python batches
    raw = load_image_folder("cifar10-jpeg.tar.gz")       # or a tree/tarball of PNG/JPEG files
    splits = preprocess(raw, validation_ratio=0.2)       # X_train (40000, 3073) float32, ...

Both loaders return a :class:`RawDataset` of uint8 images (N, H, W, C). Decoded arrays are
cached as an uncompressed ``.npz`` keyed by the source's identity (resolved path, sizes,
modification times), so a second load of CIFAR-10 takes well under a second.

Only torch, numpy and Pillow are used here: this module is part of the library.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image

from ._validation import check_int

__all__ = [
    "RawDataset",
    "UnsafePickleError",
    "load_cifar10",
    "load_image_folder",
    "preprocess",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CACHE_ENV",
]

PathLike = Union[str, os.PathLike]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_FILES = (*_CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")

CACHE_ENV = "LINEAR_SWEEPS_CACHE"
_CACHE_VERSION = 1  # bump when the decoded arrays or the .npz layout change

_SPLITS = ("train", "test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CHUNK_SIZE = 2000  # images per decoding task: amortizes pickling, still overlaps tar reading

_IMAGE_FOLDER_HELP = """\
Expected layout (PNG or JPEG files; labels follow the sorted class-folder names):
    ROOT/train/<class>/*.png|*.jpg
    ROOT/test/<class>/*.png|*.jpg
or a .tar.gz of that tree (directly or under one top-level folder).
To get CIFAR-10: pass the path to a JPEG copy in this layout (e.g. ../shared/datasets/cifar10-jpeg.tar.gz),
or use load_cifar10(root, download=True) for the official python batches."""


def _check(cond: bool, message: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` unless ``cond``.

    Messages name the path or parameter, what was expected and what was found; parameter
    messages use the library-wide format ``name must be <rule>, got <value>``.
    """
    if not cond:
        raise error(message)


def _rule(name: str, rule: str, value) -> str:
    return f"{name} must be {rule}, got {value!r}"


# --------------------------------------------------------------------------- dataset container
@dataclass
class RawDataset:
    """Decoded images and labels, as loaded from disk.

    X_train (N, H, W, C) uint8, y_train (N,) int64, X_test (M, H, W, C) uint8, y_test (M,) int64;
    ``class_names[k]`` names label k. C is 3 (RGB) or 1 (grayscale).
    Construction checks shapes and that every label is in [0, len(class_names)).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        self.class_names = [str(name) for name in self.class_names]
        k = len(self.class_names)
        _check(k >= 1, "class_names must name at least one class, got []")
        for split in _SPLITS:
            X, y = getattr(self, f"X_{split}"), np.asarray(getattr(self, f"y_{split}"))
            _check(
                isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim == 4,
                f"X_{split} must be a uint8 array of shape (N, H, W, C), "
                f"got {getattr(X, 'dtype', type(X).__name__)} {getattr(X, 'shape', '')}",
            )
            _check(
                y.shape == (len(X),) and (y.dtype.kind in "iu" or y.size == 0),
                f"y_{split} must be an integer array of shape ({len(X)},) to match X_{split}, "
                f"got {y.dtype} {y.shape}",
            )
            y = y.astype(np.int64, copy=False)
            if y.size:
                lo, hi = int(y.min()), int(y.max())
                _check(
                    lo >= 0 and hi < k,
                    f"y_{split} labels must be in [0, {k - 1}] for {k} classes, got {lo if lo < 0 else hi}",
                )
            setattr(self, f"y_{split}", y)
        _check(
            self.X_train.shape[1:] == self.X_test.shape[1:],
            f"X_train and X_test must hold images of one shape (H, W, C), "
            f"got {self.X_train.shape[1:]} and {self.X_test.shape[1:]}",
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(int(s) for s in self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- restricted unpickling
class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global that CIFAR-10 batches never contain; nothing was executed."""


def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    """The only callables an official batch (or a numpy re-pickle of one) needs."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    # Official batches (Python 2) name numpy.core; numpy 2 re-pickles name numpy._core.
    # Map both to the real objects instead of importing the deprecated numpy.core alias.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


_PICKLE_GLOBALS = _allowed_pickle_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction; any other global is refused
    before it could be called (pickle runs callables, so an open unpickler runs any code)."""

    def __init__(self, file, *, source: Path, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self._source}: it references the global {module}.{name}, "
                "which CIFAR-10 batches never contain (only numpy arrays are allowed); nothing was executed"
            ) from None


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        # encoding="bytes": the official batches are Python 2 pickles whose str are bytes here.
        obj = _RestrictedUnpickler(f, source=path, encoding="bytes").load()
    _check(isinstance(obj, dict), f"{path}: expected a pickled dict (CIFAR-10 python format), got {type(obj).__name__}")
    return obj


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _get(batch: dict, key: str, source: Path):
    """``batch[b'key']`` or ``batch['key']``: official pickles have bytes keys, re-pickles str."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"{source}: missing key {key!r}, found {sorted(_as_str(k) for k in batch)}")


# --------------------------------------------------------------------------- CIFAR-10 python format
def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> X (N, 32, 32, 3) uint8, y (N,) int64.

    Each row of b'data' holds 3072 bytes, channel-major: 1024 red, 1024 green, 1024 blue,
    each a 32x32 image in row-major order.
    """
    batch = _load_pickle(path)
    data = np.asarray(_get(batch, "data", path))
    labels = np.asarray(_get(batch, "labels", path), dtype=np.int64)
    _check(
        data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32,
        f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {data.dtype} {data.shape}",
    )
    _check(
        labels.shape == (len(data),),
        f"{path}: 'labels' must have {len(data)} entries to match 'data', got {labels.shape}",
    )
    X = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    return np.ascontiguousarray(X), labels


def _read_cifar_folder(folder: Path) -> RawDataset:
    """Decode data_batch_1..5, test_batch and batches.meta from a cifar-10-batches-py folder."""
    train = [_read_cifar_batch(folder / name) for name in _CIFAR10_TRAIN_BATCHES]
    X_test, y_test = _read_cifar_batch(folder / "test_batch")
    meta_path = folder / "batches.meta"
    names = [_as_str(n) for n in _get(_load_pickle(meta_path), "label_names", meta_path)]
    return RawDataset(
        X_train=np.concatenate([X for X, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        X_test=X_test,
        y_test=y_test,
        class_names=names,
    )


def _cifar_folder_identity(folder: Path) -> str:
    missing = [name for name in _CIFAR10_FILES if not (folder / name).is_file()]
    _check(
        not missing,
        f"{folder} is not a complete {CIFAR10_FOLDER} folder: missing {', '.join(missing)}",
        FileNotFoundError,
    )
    return "\n".join(_file_identity(folder / name) for name in _CIFAR10_FILES)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security: works under FIPS
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_md5(path: Path, expected: str) -> None:
    actual = _md5(path)
    _check(
        actual == expected.lower(),
        f"{path} has md5 {actual}, expected {expected}: the file is corrupt, incomplete or not the "
        "official CIFAR-10 archive (delete it and download again; a .tar.gz of PNG/JPEG folders "
        "loads with load_image_folder)",
    )


def _safe_extract(tar: tarfile.TarFile, dest: Path, source: Path) -> None:
    """Extract every member of ``tar`` under ``dest``.

    All members are checked before anything is written: absolute paths, '..' components,
    links whose target leaves ``dest`` and device files are refused with a ValueError.
    """
    dest = Path(os.path.abspath(dest))
    members = tar.getmembers()

    def inside(path: str) -> bool:
        return os.path.commonpath([dest, os.path.normpath(path)]) == str(dest)

    for m in members:
        where = f"refusing to extract {source}: member {m.name!r}"
        name = m.name.replace("\\", "/")
        _check(not (name.startswith("/") or os.path.isabs(m.name) or name[1:2] == ":"), f"{where} is an absolute path")
        _check(".." not in name.split("/"), f"{where} contains '..', which would write outside {dest}")
        _check(not (m.isdev() or m.isfifo()), f"{where} is a device or FIFO, not a file or folder")
        if m.issym() or m.islnk():
            link = m.linkname.replace("\\", "/")
            # symlink targets are relative to the link's folder, hardlink targets to the archive root
            base = dest / Path(name).parent if m.issym() else dest
            _check(
                not os.path.isabs(link) and not link.startswith("/") and inside(os.path.join(base, link)),
                f"{where} links to {m.linkname!r}, outside {dest}",
            )
    # Python >= 3.11.4 also re-checks each member against what is already on disk.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, members=members, **extra)


def _read_cifar_archive(archive: Path, md5: str) -> RawDataset:
    """Verify ``archive``'s md5, extract it safely beside itself and decode the batches.

    The extraction goes to a temporary folder first, so a half-extracted or refused archive
    never looks like a ready cifar-10-batches-py folder; a good one is kept beside the archive.
    """
    _verify_md5(archive, md5)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=archive.parent))
    except OSError:  # read-only folder: extract to the system temp dir and discard afterwards
        tmp = Path(tempfile.mkdtemp(prefix="cifar-10-extract-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            _safe_extract(tar, tmp, archive)
        folder = tmp / CIFAR10_FOLDER if (tmp / CIFAR10_FOLDER).is_dir() else tmp
        _cifar_folder_identity(folder)  # clear error for an archive without the batches
        raw = _read_cifar_folder(folder)
        keep = archive.parent / CIFAR10_FOLDER
        if tmp.parent == archive.parent and folder != tmp and not keep.exists():
            os.replace(folder, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw


def _download(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` via a temporary file; only a verified archive is kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, f, 1 << 20)
        _verify_md5(Path(tmp), md5)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def load_cifar10(
    root: PathLike,
    download: bool = False,
    *,
    md5: str = CIFAR10_MD5,
    cache_dir: PathLike | bool | None = None,
) -> RawDataset:
    """Load CIFAR-10 from the official python batches.

    Args:
        root: a ``cifar-10-batches-py`` folder, a folder containing it, the
            ``cifar-10-python.tar.gz`` archive, or a folder containing that archive.
        download: fetch the archive from CIFAR10_URL into ``root`` when none of the above exist.
        md5: the archive must have this md5 before it is used (tests pass their own archives).
        cache_dir: where decoded arrays are cached; None -> ``$LINEAR_SWEEPS_CACHE`` or
            ``~/.cache/linear-sweeps``; False disables the cache.

    Returns:
        RawDataset with X_train (50000, 32, 32, 3) uint8, y_train (50000,), X_test (10000, 32, 32, 3),
        y_test (10000,) and the 10 class names from batches.meta.

    Batches are unpickled with a restricted unpickler (numpy arrays only, UnsafePickleError
    otherwise) and archive members that would land outside the extraction folder are refused.
    """
    root = Path(root).expanduser()
    found = _locate_cifar10(root)
    if found is None and download:
        archive = root if root.name.endswith((".tar.gz", ".tgz")) else root / CIFAR10_ARCHIVE
        _download(CIFAR10_URL, archive, md5)
        found = ("archive", archive)
    _check(
        found is not None,
        f"CIFAR-10 not found at {root}: pass a {CIFAR10_FOLDER} folder, a folder containing it, "
        f"the {CIFAR10_ARCHIVE} archive or a folder containing it; or call "
        f"load_cifar10({str(root)!r}, download=True) to download it from {CIFAR10_URL} (163 MB). "
        "A .tar.gz of PNG/JPEG class folders loads with load_image_folder.",
        FileNotFoundError,
    )
    kind, path = found
    path = path.resolve()
    if kind == "folder":
        identity = _cifar_folder_identity(path)
        return _cached(cache_dir, "cifar10", identity, lambda: _read_cifar_folder(path))
    identity = f"{_file_identity(path)}\nmd5={md5.lower()}"
    return _cached(cache_dir, "cifar10", identity, lambda: _read_cifar_archive(path, md5))


# --------------------------------------------------------------------------- image folders
def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(_IMAGE_EXTENSIONS)


def _decode_image(name: str, source: bytes | str) -> np.ndarray:
    """Decode one PNG/JPEG (its bytes or its path) -> (H, W) uint8 if grayscale, else (H, W, 3)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if im.mode not in ("L", "RGB"):
                # 1-bit and gray+alpha stay gray; palette, RGBA, CMYK, ... become RGB (alpha dropped)
                im = im.convert("L" if im.mode in ("1", "LA", "La") else "RGB")
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow raises all three on bad files
        raise ValueError(f"cannot decode image {name}: {e}") from e


def _decode_chunk(items: list[tuple[str, bytes | str]]) -> list[np.ndarray]:
    return [_decode_image(name, source) for name, source in items]


class _Decoder:
    """Decodes (name, source) items in order, in chunks.

    With num_workers > 0 the chunks go to a process pool, started only once a full chunk
    is queued (small trees never start one), so reading a tar overlaps decoding.
    If the pool cannot start or dies, the remaining chunks are decoded in this process.
    """

    def __init__(self, num_workers: int):
        self.num_workers = num_workers
        self._pending: list[tuple[str, bytes | str]] = []
        self._jobs: list[tuple[Future | None, list]] = []  # (future, chunk) or (None, decoded)
        self._pool: ProcessPoolExecutor | None = None

    def add(self, name: str, source: bytes | str) -> None:
        self._pending.append((name, source))
        if len(self._pending) >= _CHUNK_SIZE:
            self._submit()

    def _submit(self) -> None:
        chunk, self._pending = self._pending, []
        if self.num_workers > 0:
            try:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(self.num_workers)
                self._jobs.append((self._pool.submit(_decode_chunk, chunk), chunk))
                return
            except (OSError, RuntimeError) as e:  # e.g. no /dev/shm, no fork in a sandbox
                warnings.warn(f"decoding images in this process: could not start worker processes ({e})")
                self.num_workers = 0
        self._jobs.append((None, _decode_chunk(chunk)))

    def finish(self) -> list[np.ndarray]:
        if self._pending:
            self._submit()
        images: list[np.ndarray] = []
        try:
            for future, chunk in self._jobs:
                if future is None:
                    images.extend(chunk)
                    continue
                try:
                    images.extend(future.result())
                except BrokenProcessPool:
                    images.extend(_decode_chunk(chunk))
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
        return images


# A tree is {split: {class_name: [(file_name, display_name, index into the decoded images)]}}.
_Tree = dict[str, dict[str, list[tuple[str, str, int]]]]


def _check_tree(tree: _Tree, where: str) -> list[str]:
    """Check the split/class layout; return the sorted class names (label k = classes[k])."""
    for split in _SPLITS:
        _check(split in tree, f"{where} has no {split}/ folder.\n{_IMAGE_FOLDER_HELP}", FileNotFoundError)
    classes = sorted(tree["train"])
    _check(len(classes) >= 2, f"{where}/train must hold at least two class folders, found {len(classes)}: {classes}")
    missing, extra = sorted(set(classes) - set(tree["test"])), sorted(set(tree["test"]) - set(classes))
    _check(
        not missing and not extra,
        f"{where}/test must hold the same class folders as {where}/train: "
        f"missing from test: {missing}, only in test: {extra}",
    )
    for split in _SPLITS:
        for name in classes:
            _check(bool(tree[split][name]), f"class folder {where}/{split}/{name} has no PNG or JPEG images")
    return classes


def _stack_tree(tree: _Tree, classes: list[str], images: list[np.ndarray]) -> RawDataset:
    """Stack the decoded images of each split into (N, H, W, C) uint8, ordered by class then file name.

    All images must share one size. C is 1 if every image is grayscale, else 3: grayscale
    images in a tree that also holds RGB ones are replicated over the three channels.
    """
    ordered = {  # split -> [(label, display name, image index)], by class then file name
        split: [(label, display, index)
                for label, c in enumerate(classes)
                for _, display, index in sorted(tree[split][c])]
        for split in _SPLITS
    }
    used = [images[index] for split in _SPLITS for _, _, index in ordered[split]]
    channels = 3 if any(a.ndim == 3 for a in used) else 1
    _, ref_name, ref_index = ordered["train"][0]
    H, W = images[ref_index].shape[:2]
    arrays = {}
    for split in _SPLITS:
        X = np.empty((len(ordered[split]), H, W, channels), dtype=np.uint8)
        for i, (_, display, index) in enumerate(ordered[split]):
            a = images[index]
            _check(
                a.shape[:2] == (H, W),
                f"images must all be one size: {display} is {a.shape[0]}x{a.shape[1]} (H x W) "
                f"but {ref_name} is {H}x{W}",
            )
            X[i] = a if a.ndim == 3 else a[..., None]  # (H, W, 1) broadcasts to C channels
        arrays[f"X_{split}"] = X
        arrays[f"y_{split}"] = np.array([label for label, _, _ in ordered[split]], dtype=np.int64)
    return RawDataset(**arrays, class_names=classes)


def _scan_dir_tree(root: Path) -> tuple[_Tree, list[str], str]:
    """List ROOT/{train,test}/<class>/<image> without decoding.

    Returns (tree, paths, identity): ``paths[i]`` is the file with index i in the tree, and
    identity hashes every relative path, size and mtime so that any change invalidates the cache.
    """
    tree: _Tree = {}
    paths: list[str] = []
    lines = []
    for split in _SPLITS:
        folder = root / split
        _check(folder.is_dir(), f"{folder} is not a folder.\n{_IMAGE_FOLDER_HELP}", FileNotFoundError)
        tree[split] = {}
        for entry in os.scandir(folder):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            found = tree[split][entry.name] = []
            for f in os.scandir(entry.path):
                if _is_image(f.name) and f.is_file():
                    found.append((f.name, f.path, len(paths)))
                    paths.append(f.path)
                    st = f.stat()
                    lines.append(f"{split}/{entry.name}/{f.name}\t{st.st_size}\t{st.st_mtime_ns}")
    lines.sort()
    identity = f"{root}\n" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return tree, paths, identity


def _decode_files(paths: list[str], num_workers: int) -> list[np.ndarray]:
    decoder = _Decoder(num_workers)
    for path in paths:
        decoder.add(path, path)
    return decoder.finish()


def _read_tar_tree(archive: Path, num_workers: int) -> RawDataset:
    """Decode a .tar(.gz) of the image-folder tree from the archive in one pass, without extracting.

    The tree may sit at the archive root or under a folder: the folder holding both train/
    and test/ is found from the member names (split/class/file is the last three parts).
    """
    decoder = _Decoder(num_workers)
    entries: list[tuple[tuple[str, ...], str, str, str, str]] = []  # (prefix, split, class, file, member)
    class_dirs: set[tuple[tuple[str, ...], str, str]] = set()  # also catches empty class folders
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.ReadError as e:
        raise ValueError(f"{archive} is neither a folder nor a tar archive ({e}).\n{_IMAGE_FOLDER_HELP}") from None
    with tar:
        for m in tar:
            parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
            if m.name.startswith("/") or any(p.startswith(".") for p in parts):  # absolute, '..', hidden
                continue
            if m.isdir() and len(parts) >= 2 and parts[-2] in _SPLITS:
                class_dirs.add((parts[:-2], parts[-2], parts[-1]))
            elif m.isfile() and len(parts) >= 3 and parts[-3] in _SPLITS and _is_image(parts[-1]):
                decoder.add(f"{archive}:{m.name}", tar.extractfile(m).read())
                entries.append((parts[:-3], parts[-3], parts[-2], parts[-1], m.name))
                class_dirs.add((parts[:-3], parts[-3], parts[-2]))
        images = decoder.finish()

    splits_by_prefix: dict[tuple[str, ...], set[str]] = {}
    for prefix, split, _ in class_dirs:
        splits_by_prefix.setdefault(prefix, set()).add(split)
    candidates = sorted((p for p, s in splits_by_prefix.items() if s == set(_SPLITS)), key=len)
    _check(
        bool(candidates),
        f"{archive} holds no folder with both train/<class>/ and test/<class>/ images.\n{_IMAGE_FOLDER_HELP}",
        FileNotFoundError,
    )
    _check(
        len(candidates) == 1 or len(candidates[0]) < len(candidates[1]),
        f"{archive} holds several image trees: {['/'.join(p) or '.' for p in candidates]}; pack one per archive",
    )
    prefix = candidates[0]
    tree: _Tree = {split: {} for split in _SPLITS}
    for p, split, name in class_dirs:
        if p == prefix:
            tree[split][name] = []
    for index, (p, split, name, file_name, member) in enumerate(entries):
        if p == prefix:
            tree[split][name].append((file_name, f"{archive}:{member}", index))
    where = f"{archive}:{'/'.join(prefix)}" if prefix else str(archive)
    classes = _check_tree(tree, where)
    return _stack_tree(tree, classes, images)


def load_image_folder(
    root: PathLike,
    *,
    cache_dir: PathLike | bool | None = None,
    num_workers: int | None = None,
) -> RawDataset:
    """Load ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (PNG or JPEG) into a RawDataset.

    Args:
        root: the folder holding train/ and test/, or a .tar.gz (.tar, .tgz) of that tree,
            directly or under a top-level folder (decoded from the archive, not extracted).
        cache_dir: as for load_cifar10 (None -> default cache, False -> no cache).
        num_workers: worker processes decoding images while this one reads (None -> one per
            CPU but one, at most 8; 0 -> decode here). A pool starts only once a few thousand
            images are queued, so small trees never start one.

    Returns:
        RawDataset with X (N, H, W, C) uint8, ordered by class then file name; labels index the
        sorted class-folder names. C = 1 if every image is grayscale, else 3. Alpha is dropped.

    Raises:
        FileNotFoundError: ``root``, train/ or test/ is missing (the message shows the layout).
        ValueError: fewer than two classes, an empty class folder, different class folders in
            train/ and test/, images of different sizes, or an image that cannot be decoded.
    """
    root = Path(root).expanduser()
    _check(root.exists(), f"image folder not found: {root}\n{_IMAGE_FOLDER_HELP}", FileNotFoundError)
    root = root.resolve()
    if num_workers is None:
        num_workers = min((os.cpu_count() or 1) - 1, 8)
    num_workers = check_int("num_workers", num_workers, minimum=0)
    if root.is_file():
        return _cached(cache_dir, "imagefolder", _file_identity(root), lambda: _read_tar_tree(root, num_workers))
    tree, paths, identity = _scan_dir_tree(root)
    classes = _check_tree(tree, str(root))  # layout errors come before any decoding
    return _cached(
        cache_dir, "imagefolder", identity, lambda: _stack_tree(tree, classes, _decode_files(paths, num_workers))
    )


# --------------------------------------------------------------------------- cache
def _file_identity(path: Path) -> str:
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


def _cached(
    cache_dir: PathLike | bool | None, kind: str, identity: str, decode: Callable[[], RawDataset]
) -> RawDataset:
    """Return the cached arrays for (kind, identity), or ``decode()`` them and cache the result."""
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


# --------------------------------------------------------------------------- preprocessing
def _stratified_split(
    y: np.ndarray, num_classes: int, ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of indices 0..N-1 into (train, val), both shuffled.

    Validation takes round(N * ratio) examples, shared among classes in proportion to their
    counts (largest remainder), so it is class-balanced: 5000 per class at 0.2 -> 1000 each.
    """
    counts = np.bincount(y, minlength=num_classes)
    quota = counts * ratio
    n_val = np.floor(quota).astype(np.int64)
    extra = int(round(len(y) * ratio)) - int(n_val.sum())
    n_val[np.argsort(n_val - quota, kind="stable")[:extra]] += 1  # largest fractional parts first
    train, val = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[: n_val[c]])
        train.append(idx[n_val[c]:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _features(
    u8: torch.Tensor, mean: torch.Tensor, scale: bool, subtract_mean: bool, bias_trick: bool, dtype: torch.dtype
) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, D) with D = H*W*C (+1 with the bias trick), in ``dtype``.

    Each step writes into the output (no float64 or full-size temporaries): convert, /255,
    minus the per-channel mean, then the ones column.
    """
    N, C = u8.shape[0], u8.shape[-1]
    D = int(np.prod(u8.shape[1:]))
    out = torch.empty(N, D + int(bias_trick), dtype=dtype, device=u8.device)
    x = out[:, :D]  # a view of the pixel columns; flattening order is H, W, C
    x.copy_(u8.reshape(N, D))
    if scale:
        x.div_(255)
    if subtract_mean:
        x.unflatten(1, (-1, C)).sub_(mean)  # (N, H*W, C) - (C,)
    if bias_trick:
        out[:, D] = 1
    return out


def preprocess(
    raw: RawDataset,
    validation_ratio: float = 0.2,
    bias_trick: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    subtract_mean: bool = True,
    scale: bool = True,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
) -> dict:
    """Turn a RawDataset into the assignment's tensors.

    Steps, each one a parameter:
      1. seeded stratified train/validation split of raw's training set (validation_ratio of it,
         class-balanced: 50,000 at 0.2 -> 40,000 / 10,000);
      2. optional seeded subsample of each split (num_train / num_val / num_test), taken after
         the split, so the validation set does not depend on num_train;
      3. pixels / 255 (scale);
      4. minus the per-channel mean of the (final) training split (subtract_mean);
      5. flatten each image to a row of H*W*C values (order H, W, C);
      6. append a column of ones (bias_trick), so D = H*W*C + 1 (3073 for CIFAR-10).

    Returns a dict:
        X_train (N_train, D), X_val (N_val, D), X_test (N_test, D): ``dtype`` on ``device``;
        y_train, y_val, y_test: int64 on ``device``;
        class_names (list[str]), image_shape (H, W, C) to reshape rows or weights back to images,
        mean (C,): the per-channel mean subtracted (zeros if subtract_mean=False), in ``dtype``.
    """
    _check(
        isinstance(raw, RawDataset),
        f"raw must be a RawDataset (from load_cifar10 or load_image_folder), got {type(raw).__name__}",
        TypeError,
    )
    _check(
        isinstance(validation_ratio, Real) and not isinstance(validation_ratio, bool) and 0 <= validation_ratio < 1,
        _rule("validation_ratio", "in [0, 1)", validation_ratio),
    )
    _check(
        isinstance(dtype, torch.dtype) and dtype.is_floating_point,
        _rule("dtype", "a floating-point torch.dtype such as torch.float32", dtype),
    )
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(_rule("device", "a torch.device or a string such as 'cpu' or 'cuda:0'", device)) from None
    seed = check_int("seed", seed, minimum=0)
    limits = {
        "num_train": None if num_train is None else check_int("num_train", num_train, minimum=1),
        "num_val": None if num_val is None else check_int("num_val", num_val, minimum=0),
        "num_test": None if num_test is None else check_int("num_test", num_test, minimum=0),
    }

    rng = np.random.default_rng(seed)
    train_idx, val_idx = _stratified_split(raw.y_train, raw.num_classes, float(validation_ratio), rng)
    _check(
        len(train_idx) > 0,
        f"validation_ratio={validation_ratio} leaves no training examples out of {len(raw.y_train)}",
    )
    test_idx = rng.permutation(len(raw.y_test)) if limits["num_test"] is not None else np.arange(len(raw.y_test))
    indices = {"train": train_idx, "val": val_idx, "test": test_idx}
    for split, idx in indices.items():
        limit = limits[f"num_{split}"]
        if limit is not None:
            _check(limit <= len(idx), _rule(f"num_{split}", f"<= {len(idx)} (the {split} split size)", limit))
            indices[split] = idx[:limit]

    # Gather uint8 rows first: 4x less to copy (and to move to an accelerator) than floats.
    sources = {"train": raw.X_train, "val": raw.X_train, "test": raw.X_test}
    labels = {"train": raw.y_train, "val": raw.y_train, "test": raw.y_test}
    u8 = {split: sources[split][idx] for split, idx in indices.items()}  # (n, H, W, C) uint8

    C = raw.image_shape[2]
    if subtract_mean:
        # Exact integer sums (no rounding over 40,000 * 1024 pixels per channel), taken on the
        # uint8 rows with numpy: ~10x faster than torch's integer reduction on CPU.
        train = u8["train"]
        sums = train.reshape(len(train), -1).sum(axis=0, dtype=np.int64).reshape(-1, C).sum(axis=0)
        mean = torch.from_numpy(sums / (train.size // C))  # (C,) float64, tiny
        if scale:
            mean = mean / 255
        mean = mean.to(device=device, dtype=dtype)
    else:
        mean = torch.zeros(C, dtype=dtype, device=device)

    out = {}
    for split, idx in indices.items():
        pixels = torch.from_numpy(u8[split]).to(device)
        out[f"X_{split}"] = _features(pixels, mean, scale, subtract_mean, bias_trick, dtype)
        out[f"y_{split}"] = torch.from_numpy(labels[split][idx]).to(device)
    out["class_names"] = list(raw.class_names)
    out["image_shape"] = raw.image_shape
    out["mean"] = mean
    return out
