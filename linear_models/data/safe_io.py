"""Reading untrusted dataset files safely: restricted unpickling, md5, tar members, download.

The rule for links, in folders and archives alike: nothing outside the dataset root is read.
An archive member that is absolute, contains '..', is a device, or is a (sym/hard) link whose
target leaves the archive's root is refused (:func:`unsafe_member_reason`); a folder's
symlink is followed only when it resolves inside the folder (:func:`check_inside`).
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import lzma
import os
import pickle
import posixpath
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError, check

__all__ = [
    "UnsafePickleError", "load_pickle", "md5_of", "verify_md5", "unsafe_member_reason", "safe_extract",
    "ARCHIVE_READ_ERRORS", "corrupt_archive_error", "check_inside", "download",
]

# What reading a damaged .tar / .tar.gz / .tar.xz raises (a truncated gzip stream: EOFError).
ARCHIVE_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


# --------------------------------------------------------------------------- restricted unpickling
class UnsafePickleError(DataError, pickle.UnpicklingError):
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
# What a damaged (truncated, overwritten) pickle raises while loading.
_PICKLE_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                       IndexError, KeyError, OverflowError)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction; any other global is refused
    before it could be called (pickle runs callables, so an open unpickler runs any code)."""

    def __init__(self, file, *, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle it: it references the global {module}.{name}, "
                "which CIFAR-10 batches never contain (only numpy arrays are allowed); nothing was executed"
            ) from None


def load_pickle(path: Path, shown: str | None = None) -> dict:
    """Unpickle the dict in ``path`` with the restricted unpickler.

    ``shown`` names the file in messages (default: the path). Raises UnsafePickleError for
    a forbidden global and DataError for a damaged pickle or one that is not a dict.
    """
    shown = shown or str(path)
    with open(path, "rb") as f:
        try:
            # encoding="bytes": the official batches are Python 2 pickles whose str are bytes here.
            obj = _RestrictedUnpickler(f, source=shown, encoding="bytes").load()
        except UnsafePickleError:
            raise
        except _PICKLE_READ_ERRORS as e:
            raise DataError(f"{shown}: not a readable pickle, the file is truncated or damaged "
                            f"({type(e).__name__}: {e})") from None
    check(isinstance(obj, dict), f"{shown}: expected a pickled dict (CIFAR-10 python format), got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- checksums
def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security: works under FIPS
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MD5_HINT = "delete it and download again; a .tar.gz of PNG/JPEG folders loads with load_image_folder"


def verify_md5(path: Path, expected: str, shown: str | None = None, hint: str = _MD5_HINT) -> None:
    """DataError naming ``shown`` (default: the path) unless ``path`` has md5 ``expected``."""
    actual = md5_of(path)
    check(
        actual == expected.lower(),
        f"{shown or path} has md5 {actual}, expected {expected}: the file is corrupt, incomplete or not the "
        f"official CIFAR-10 archive ({hint})",
    )


# --------------------------------------------------------------------------- archives
def unsafe_member_reason(m: tarfile.TarInfo, outside: str = "the archive's root") -> str | None:
    """Why member ``m`` could reach outside the archive's root, or None when it is safe.

    Refused: absolute names, '..' components, devices and FIFOs, and symbolic or hard links
    whose target leaves the root (symlink targets are relative to the link's folder, hard
    link targets to the archive root). ``outside`` names the root in the reason.
    """
    name = m.name.replace("\\", "/")
    if name.startswith("/") or os.path.isabs(m.name) or name[1:2] == ":":
        return "is an absolute path"
    if ".." in name.split("/"):
        return f"contains '..', which would write outside {outside}"
    if m.isdev() or m.isfifo():
        return "is a device or FIFO, not a file or folder"
    if m.issym() or m.islnk():
        link = m.linkname.replace("\\", "/")
        base = posixpath.dirname(name) if m.issym() else ""
        target = posixpath.normpath(posixpath.join(base, link))
        if link.startswith("/") or os.path.isabs(m.linkname) or target == ".." or target.startswith("../"):
            return f"links to {m.linkname!r}, outside {outside}"
    return None


def corrupt_archive_error(archive: Path, error: BaseException) -> DataError:
    """The DataError for an archive that fails while being read (truncated download, bad data)."""
    return DataError(f"{archive}: the archive is truncated or corrupt ({type(error).__name__}: {error}); "
                     "download or pack it again")


def safe_extract(tar: tarfile.TarFile, dest: Path, source: Path) -> None:
    """Extract every member of ``tar`` under ``dest``.

    All members are checked before anything is written (:func:`unsafe_member_reason`); an
    unsafe one is refused with a DataError naming the archive and the member. A damaged
    archive raises DataError too.
    """
    dest = Path(os.path.abspath(dest))
    try:
        members = tar.getmembers()
        for m in members:
            reason = unsafe_member_reason(m, str(dest))
            check(reason is None, f"{source}: refusing to extract the archive: member {m.name!r} {reason}")
        # Python >= 3.11.4 also re-checks each member against what is already on disk.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **extra)
    except ARCHIVE_READ_ERRORS as e:
        raise corrupt_archive_error(source, e) from None


# --------------------------------------------------------------------------- folders
def check_inside(path: Path, root: Path, shown: str | None = None) -> None:
    """DataError unless ``path`` (a symlink or anything under ``root``) resolves inside ``root``.

    ``root`` must be resolved already. Only symlinks can leave it, so plain entries cost no
    system call beyond the ``is_symlink`` the caller's scandir already answers.
    """
    target = Path(os.path.realpath(path))
    check(
        target == root or root in target.parents,
        f"{shown or path}: symlink to {target}, outside the dataset root {root}; "
        "only files inside the root are read (copy the file in, or point the root higher)",
    )


# --------------------------------------------------------------------------- download
def download(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` via a temporary ``.part`` file beside it.

    Only an archive with md5 ``md5`` is kept (DataError otherwise); an interrupted transfer
    raises ConnectionError (an OSError, like urlopen's own failures). The ``.part`` file, and
    the folders made for ``dest``, are removed whatever happens, Ctrl-C included.
    """
    made = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            try:
                shutil.copyfileobj(response, f, 1 << 20)
            except http.client.HTTPException as e:  # e.g. IncompleteRead: the server hung up
                raise ConnectionError(f"{url}: download interrupted after {f.tell()} bytes "
                                      f"({type(e).__name__}: {e}); nothing was kept") from e
        verify_md5(Path(tmp), md5, shown=f"{url}: the downloaded file",
                   hint="nothing was kept; check the URL and the md5 passed")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for folder in made:  # innermost first; one that got other files meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
