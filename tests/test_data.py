"""Tests for linear_models.data: CIFAR-10 python batches, image folders, cache, preprocess.

Every dataset here is generated in tmp_path (a few images per batch); nothing touches the
internet. The one test reading the real JPEG archive is marked slow and skips without it.
"""
from __future__ import annotations

import hashlib
import http.server
import inspect
import io
import os
import pickle
import re
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from linear_models import data
from linear_models.data import cache as data_cache, cifar10, decode, splits_cache
from linear_models.data import (
    DataError,
    RawDataset,
    UnsafePickleError,
    load_cifar10,
    load_image_folder,
    preprocess,
)

REAL_JPEG_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10-jpeg.tar.gz"
CIFAR_NAMES = ["airplane", "automobile", "bird"]
PER_BATCH = 4  # images per generated CIFAR batch: 5 train batches -> 20 train, 4 test


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep the default cache inside tmp_path, never in ~/.cache."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "default-cache"))


# --------------------------------------------------------------------------- generators
def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar_folder(folder: Path, *, key=bytes, protocol=2, py2_names=False, seed=0) -> dict[str, np.ndarray]:
    """Write a tiny cifar-10-batches-py folder in the official format.

    Batches are pickled dicts (bytes keys like the Python 2 originals, protocol 2) with b'data'
    (N, 3072) uint8 channel-major rows and b'labels' a list of ints. ``py2_names`` renames
    numpy._core to numpy.core in the pickles, as in the official (numpy 1, Python 2) files.
    Returns the rows and labels written, {"train_rows", "train_labels", "test_rows", "test_labels"}.
    """
    rng = np.random.default_rng(seed)
    k = key if key is str else (lambda s: s.encode())
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train_rows": [], "train_labels": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, len(CIFAR_NAMES), size=PER_BATCH)]
        batch = {k("batch_label"): k(name), k("labels"): labels, k("data"): rows,
                 k("filenames"): [k(f"img_{i}.png") for i in range(PER_BATCH)]}
        payload = pickle.dumps(batch, protocol=protocol)
        if py2_names:  # protocol-2 GLOBAL opcodes are newline-terminated text: a plain rename is safe
            payload = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        (folder / name).write_bytes(payload)
        if name == "test_batch":
            written["test_rows"], written["test_labels"] = rows, np.array(labels)
        else:
            written["train_rows"].append(rows)
            written["train_labels"].extend(labels)
    meta = {k("label_names"): [k(n) for n in CIFAR_NAMES], k("num_cases_per_batch"): PER_BATCH, k("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    written["train_rows"] = np.concatenate(written["train_rows"])
    written["train_labels"] = np.array(written["train_labels"])
    return written


def tar_folder(folder: Path, archive: Path, arcname: str, extra=()) -> str:
    """tar.gz ``folder`` as ``arcname`` plus ``extra`` (TarInfo, bytes | None) members; returns the md5."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return _md5(archive)


@pytest.fixture
def cifar_archive(tmp_path):
    """(archive path, its md5, the arrays written) for a tiny official-format archive."""
    written = write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    md5 = tar_folder(tmp_path / "src" / "cifar-10-batches-py", archive, "cifar-10-batches-py")
    return archive, md5, written


def write_image_tree(root: Path, *, mode="RGB", ext=".png", classes=("cat", "ant", "dog"), per_class=(3, 2),
                     size=(6, 8), seed=0) -> dict[tuple[str, str, int], np.ndarray]:
    """ROOT/{train,test}/<class>/NNNN<ext> of H x W = ``size`` images; returns {(split, class, i): pixels}.

    PNGs hold noise (lossless, compared exactly); JPEGs hold one flat colour each so that
    compression barely changes them.
    """
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, n in zip(("train", "test"), per_class):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = size + ((3,) if mode == "RGB" else ())
                if ext == ".png":
                    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                else:
                    a = np.broadcast_to(rng.integers(0, 256, size=shape[2:], dtype=np.uint8), shape).copy()
                Image.fromarray(a, mode).save(root / split / name / f"{i:04d}{ext}")
                pixels[(split, name, i)] = a
    return pixels


def tar_tree(root: Path, archive: Path, top: str | None) -> Path:
    """tar.gz an image tree under a top-level folder ``top``, or with train/ and test/ at the root."""
    with tarfile.open(archive, "w:gz") as tar:
        if top is None:
            for split in ("train", "test"):
                tar.add(root / split, arcname=split)
        else:
            tar.add(root, arcname=top)
    return archive


def make_raw(num_classes=3, per_class=50, test_per_class=5, shape=(4, 5, 3), seed=0) -> RawDataset:
    """A synthetic RawDataset; pixel [0, 0, 0] and [0, 0, 1] of training image i encode i (i < 65536)."""
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    X = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    X[:, 0, 0, 0], X[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    y = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    X_test = rng.integers(0, 256, size=(num_classes * test_per_class, *shape), dtype=np.uint8)
    y_test = np.repeat(np.arange(num_classes), test_per_class)
    return RawDataset(X, y, X_test, y_test, [f"c{i}" for i in range(num_classes)])


def _row_ids(X: torch.Tensor) -> np.ndarray:
    """Recover the training index that make_raw encodes, from unscaled, uncentred rows."""
    X = X.cpu().double().numpy()
    return (X[:, 0] * 256 + X[:, 1]).astype(np.int64)


# --------------------------------------------------------------------------- CIFAR-10 python format
@pytest.mark.parametrize("form", ["batches folder", "parent folder", "archive", "archive folder"])
def test_load_cifar10_forms(tmp_path, cifar_archive, form):
    archive, md5, written = cifar_archive
    root = {
        "batches folder": tmp_path / "src" / "cifar-10-batches-py",
        "parent folder": tmp_path / "src",
        "archive": archive,
        "archive folder": archive.parent,
    }[form]
    raw = load_cifar10(root, md5=md5, cache_dir=False)

    assert raw.X_train.shape == (5 * PER_BATCH, 32, 32, 3) and raw.X_train.dtype == np.uint8
    assert raw.X_test.shape == (PER_BATCH, 32, 32, 3)
    assert raw.y_train.dtype == np.int64
    np.testing.assert_array_equal(raw.y_train, written["train_labels"])
    np.testing.assert_array_equal(raw.y_test, written["test_labels"])
    assert raw.class_names == CIFAR_NAMES
    # Channel-major row: red plane, then green, then blue; each 32x32 row-major.
    rows = written["train_rows"]
    i, h, w = 7, 3, 30
    for c in range(3):
        assert raw.X_train[i, h, w, c] == rows[i, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(raw.X_test, written["test_rows"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_archive_is_extracted_beside_itself_without_leftovers(cifar_archive):
    archive, md5, _ = cifar_archive
    load_cifar10(archive, md5=md5, cache_dir=False)
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert (archive.parent / "cifar-10-batches-py" / "data_batch_5").is_file()


@pytest.mark.parametrize(
    "key, protocol, py2_names", [(bytes, 2, True), (str, 2, False), (bytes, 4, False), (str, 5, False)]
)
def test_load_cifar10_accepts_str_keys_and_numpy_repickles(tmp_path, key, protocol, py2_names):
    written = write_cifar_folder(tmp_path / "b", key=key, protocol=protocol, py2_names=py2_names)
    if py2_names:
        assert b"numpy.core.multiarray" in (tmp_path / "b" / "test_batch").read_bytes()
    raw = load_cifar10(tmp_path / "b", cache_dir=False)
    assert raw.class_names == CIFAR_NAMES
    np.testing.assert_array_equal(raw.y_test, written["test_labels"])


class _RunsShell:
    """Unpickling this would run a shell command: the classic pickle exploit."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload, refused", [(_RunsShell, "system"), (_CallsEval, r"__builtin__\.eval")])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, refused):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder)
    marker = tmp_path / "pwned"
    evil = payload(f"touch {marker}") if payload is _RunsShell else payload()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": evil, b"labels": []}, protocol=2))

    with pytest.raises(UnsafePickleError, match=rf"data_batch_1.*{refused}") as info:
        load_cifar10(folder, cache_dir=False)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()


def test_bad_md5_is_refused(cifar_archive):
    archive, md5, _ = cifar_archive
    with pytest.raises(ValueError, match=rf"{archive.name} has md5 {md5}, expected {data.CIFAR10_MD5}"):
        load_cifar10(archive, cache_dir=False)  # the default md5 is the official archive's
    assert not (archive.parent / "cifar-10-batches-py").exists()


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    payload = None
    if kind == tarfile.REGTYPE:
        payload = b"evil"
        info.size = len(payload)
    return info, payload


@pytest.mark.parametrize(
    "member, message",
    [
        (("../evil",), r"'../evil' contains '\.\.'"),
        (("cifar-10-batches-py/../../evil",), r"contains '\.\.'"),
        (("ABSOLUTE",), r"is an absolute path"),
        (("evil-link", tarfile.SYMTYPE, "../../evil"), r"'evil-link' links to '../../evil', outside"),
        (("evil-link", tarfile.SYMTYPE, "/etc/passwd"), r"links to '/etc/passwd', outside"),
        (("evil-hardlink", tarfile.LNKTYPE, "../evil"), r"links to '../evil', outside"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-up", "symlink-absolute", "hardlink-up"],
)
def test_unsafe_tar_members_are_refused(tmp_path, member, message):
    write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    if member[0] == "ABSOLUTE":
        member = (str(tmp_path / "evil"),)
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    md5 = tar_folder(tmp_path / "src" / "cifar-10-batches-py", archive, "cifar-10-batches-py", extra=[_member(*member)])

    with pytest.raises(ValueError, match=rf"refusing to extract .*{message}"):
        load_cifar10(archive, md5=md5, cache_dir=False)
    assert not list(tmp_path.rglob("evil*"))  # nothing written, inside or outside
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar-10-python.tar.gz"]  # no temp folder left


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found at .*download=True"):
        load_cifar10(tmp_path / "nothing-here")


class _ArchiveServer:
    """A real HTTP server on 127.0.0.1 serving one file: whole at /ok, cut off halfway at /cut.

    /cut sends chunked data and closes the connection in the middle of the transfer, the way
    a dropped connection looks to urlopen (http.client.IncompleteRead).
    """

    def __init__(self, payload: bytes):
        payload_ = payload
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                if self.path == "/ok":
                    self.send_header("Content-Length", str(len(payload_)))
                    self.end_headers()
                    self.wfile.write(payload_)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                half = payload_[: len(payload_) // 2]
                self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")  # no last chunk
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize("transport", ["file", "http"])
def test_download_only_when_missing(tmp_path, cifar_archive, transport):
    """The real urlopen (file:// URL or a local HTTP server), the md5 check, no second download."""
    archive, md5, written = cifar_archive
    root = tmp_path / "downloads"
    if transport == "file":
        raw = load_cifar10(root, download=True, md5=md5, url=archive.as_uri(), cache_dir=False)
    else:
        with _ArchiveServer(archive.read_bytes()) as server:
            raw = load_cifar10(root, download=True, md5=md5, url=server.url + "/ok", cache_dir=False)
        assert server.requests == ["/ok"]
    np.testing.assert_array_equal(raw.y_train, written["train_labels"])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no .part

    archive.unlink()  # the URL now leads nowhere: a second download would fail
    again = load_cifar10(root, download=True, md5=md5, url=archive.as_uri(), cache_dir=False)
    np.testing.assert_array_equal(again.y_train, written["train_labels"])


def test_download_with_bad_md5_keeps_nothing(tmp_path, cifar_archive):
    archive, md5, _ = cifar_archive
    root = tmp_path / "downloads"
    root.mkdir()  # a folder that was there stays
    url = archive.as_uri()
    with pytest.raises(DataError, match=rf"^{re.escape(url)}: the downloaded file has md5 {md5}, expected 0+: .*nothing was kept"):
        load_cifar10(root, download=True, md5="0" * 32, url=url, cache_dir=False)
    assert list(root.iterdir()) == []  # the .part file is gone too


def test_interrupted_download_keeps_nothing(tmp_path, cifar_archive):
    archive, md5, _ = cifar_archive
    root = tmp_path / "downloads"
    with _ArchiveServer(archive.read_bytes()) as server:
        with pytest.raises(ConnectionError, match=rf"^{re.escape(server.url)}/cut: download interrupted after \d+ bytes"):
            load_cifar10(root, download=True, md5=md5, url=server.url + "/cut", cache_dir=False)
    assert server.requests == ["/cut"]
    assert not root.exists()  # neither the archive, nor its .part file, nor the folder made for them


def test_default_download_url_is_the_official_one():
    assert data.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert inspect.signature(load_cifar10).parameters["url"].default == data.CIFAR10_URL


# --------------------------------------------------------------------------- cache
def _raise(*args, **kwargs):
    raise AssertionError("decoded again instead of reading the cache")


def _assert_same(a: RawDataset, b: RawDataset) -> None:
    for name in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.class_names == b.class_names


@pytest.mark.parametrize("form", ["folder", "archive"])
def test_cifar10_second_load_reads_the_cache(tmp_path, cifar_archive, monkeypatch, form):
    archive, md5, _ = cifar_archive
    root = tmp_path / "src" if form == "folder" else archive
    cache = tmp_path / "cache"
    first = load_cifar10(root, md5=md5, cache_dir=cache)

    monkeypatch.setattr(cifar10, "_read_cifar_folder", _raise)
    monkeypatch.setattr(cifar10, "_read_cifar_archive", _raise)
    second = load_cifar10(root, md5=md5, cache_dir=cache)
    _assert_same(first, second)
    files = list(cache.iterdir())
    assert [f.is_dir() for f in files] == [True]  # atomic write: no temporary folder left
    assert sorted(p.name for p in files[0].iterdir()) == [f"{name}.npy" for name in sorted(data_cache._ARRAYS)]
    assert isinstance(second.X_train, np.memmap)  # read without a copy


def test_default_cache_dir_comes_from_the_environment(tmp_path, cifar_archive):
    archive, md5, _ = cifar_archive
    load_cifar10(archive, md5=md5)
    assert [p.name.startswith("cifar10-") for p in (tmp_path / "default-cache").iterdir()] == [True]


def test_cache_disabled_writes_nothing(tmp_path, cifar_archive):
    archive, md5, _ = cifar_archive
    load_cifar10(archive, md5=md5, cache_dir=False)
    assert not (tmp_path / "default-cache").exists()


@pytest.mark.parametrize("damage", ["an array overwritten", "an array missing", "a file in its place"])
def test_corrupt_cache_is_ignored_and_rewritten(tmp_path, cifar_archive, damage):
    archive, md5, _ = cifar_archive
    cache = tmp_path / "cache"
    first = load_cifar10(archive, md5=md5, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    if damage == "an array overwritten":
        (cache_file / "X_train.npy").write_bytes(b"not an array")
    elif damage == "an array missing":
        (cache_file / "y_test.npy").unlink()
    else:
        shutil.rmtree(cache_file)
        cache_file.write_bytes(b"not a folder")

    with pytest.warns(UserWarning, match="ignoring unreadable cache file"):
        second = load_cifar10(archive, md5=md5, cache_dir=cache)
    _assert_same(first, second)
    third = data_cache._cache_read(cache_file)
    assert third is not None
    _assert_same(first, third)
    assert [p.name for p in cache.iterdir()] == [cache_file.name]  # the damaged one is gone, not set aside


def test_changed_image_invalidates_the_cache(tmp_path):
    pixels = write_image_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    load_image_folder(tmp_path / "tree", cache_dir=cache)

    changed = tmp_path / "tree" / "train" / "ant" / "0000.png"
    new = 255 - pixels[("train", "ant", 0)]
    Image.fromarray(new).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime, even on coarse clocks
    raw = load_image_folder(tmp_path / "tree", cache_dir=cache)
    np.testing.assert_array_equal(raw.X_train[0], new)  # "ant" sorts first, 0000 is its first file
    assert len(list(cache.iterdir())) == 2


def test_image_folder_second_load_reads_the_cache(tmp_path, monkeypatch):
    write_image_tree(tmp_path / "tree")
    first = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(decode, "_decode_image", _raise)
    _assert_same(first, load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache"))


def _splits_written():
    for thread in threading.enumerate():
        if thread.name == splits_cache.WRITER_THREAD:
            thread.join()


SPLIT_TENSORS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_splits_are_cached_beside_the_decoded_arrays(tmp_path, monkeypatch, dtype):
    write_image_tree(tmp_path / "tree", per_class=(6, 2))
    raw = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    params = dict(validation_ratio=0.5, dtype=dtype, seed=3)
    first = data.cached_preprocess(raw, **params)
    _splits_written()
    (folder,) = raw.cache_path.glob("splits-*")

    monkeypatch.setattr(splits_cache, "preprocess", _raise)
    again = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    second = data.cached_preprocess(again, **params)
    expected = preprocess(raw, **params)
    for name in SPLIT_TENSORS:  # the same tensors, bit for bit, as preprocess makes
        assert second[name].dtype == expected[name].dtype and torch.equal(second[name], expected[name]), name
        assert torch.equal(first[name], expected[name]), name
    assert second["class_names"] == expected["class_names"] and second["image_shape"] == expected["image_shape"]
    assert list(raw.cache_path.glob("splits-*")) == [folder]  # read, not written again


def test_splits_cache_keys_on_the_parameters_and_keeps_the_latest_variants(tmp_path):
    write_image_tree(tmp_path / "tree", per_class=(6, 2))
    raw = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    for seed in range(splits_cache.MAX_VARIANTS + 2):
        out = data.cached_preprocess(raw, validation_ratio=0.5, seed=seed)
        _splits_written()
        assert torch.equal(out["X_val"], preprocess(raw, validation_ratio=0.5, seed=seed)["X_val"])
        time.sleep(0.01)  # distinct modification times
    assert len(list(raw.cache_path.glob("splits-*"))) == splits_cache.MAX_VARIANTS


def test_splits_cache_is_skipped_without_a_data_cache_or_off_the_cpu(tmp_path):
    write_image_tree(tmp_path / "tree")
    raw = load_image_folder(tmp_path / "tree", cache_dir=False)
    assert raw.cache_path is None
    out = data.cached_preprocess(raw, validation_ratio=0.5)
    assert torch.equal(out["X_train"], preprocess(raw, validation_ratio=0.5)["X_train"])
    cached = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    data.cached_preprocess(cached, validation_ratio=0.5, dtype=torch.bfloat16)  # numpy cannot store it
    data.cached_preprocess(cached, validation_ratio=0.5, device="meta")
    _splits_written()
    assert list(cached.cache_path.glob("splits-*")) == []


def test_unreadable_splits_cache_is_ignored_and_rewritten(tmp_path):
    write_image_tree(tmp_path / "tree", per_class=(6, 2))
    raw = load_image_folder(tmp_path / "tree", cache_dir=tmp_path / "cache")
    data.cached_preprocess(raw, validation_ratio=0.5)
    _splits_written()
    (folder,) = raw.cache_path.glob("splits-*")
    (folder / "X_val.npy").write_bytes(b"not an array")
    with pytest.warns(UserWarning, match="ignoring unreadable cache folder"):
        out = data.cached_preprocess(raw, validation_ratio=0.5)
    _splits_written()
    assert torch.equal(out["X_val"], preprocess(raw, validation_ratio=0.5)["X_val"])
    assert isinstance(splits_cache._read(folder)["X_val"], torch.Tensor)


# --------------------------------------------------------------------------- image folders
@pytest.mark.parametrize("mode, ext", [("RGB", ".png"), ("L", ".png"), ("RGB", ".jpg")])
@pytest.mark.parametrize("source", ["folder", "tar.gz with top folder", "tar.gz without top folder"])
def test_load_image_folder(tmp_path, mode, ext, source):
    pixels = write_image_tree(tmp_path / "tree", mode=mode, ext=ext)
    root = {
        "folder": tmp_path / "tree",
        "tar.gz with top folder": tar_tree(tmp_path / "tree", tmp_path / "a.tar.gz", "cifar10-mini"),
        "tar.gz without top folder": tar_tree(tmp_path / "tree", tmp_path / "b.tar.gz", None),
    }[source]
    raw = load_image_folder(root, cache_dir=False)

    channels = 3 if mode == "RGB" else 1
    assert raw.class_names == ["ant", "cat", "dog"]  # sorted folder names
    assert raw.X_train.shape == (9, 6, 8, channels) and raw.X_train.dtype == np.uint8
    assert raw.X_test.shape == (6, 6, 8, channels)
    np.testing.assert_array_equal(raw.y_train, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(raw.y_test, [0, 0, 1, 1, 2, 2])
    expected = pixels[("train", "cat", 2)].reshape(6, 8, channels)  # label 1, third file -> row 5
    tolerance = 0 if ext == ".png" else 8  # JPEG: a flat colour survives within a few levels
    np.testing.assert_allclose(raw.X_train[5].astype(int), expected.astype(int), atol=tolerance)


def test_mixed_gray_and_rgb_becomes_rgb(tmp_path):
    gray = write_image_tree(tmp_path / "tree", mode="L")
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 2] = 200
    Image.fromarray(rgb).save(tmp_path / "tree" / "test" / "dog" / "0001.png")
    raw = load_image_folder(tmp_path / "tree", cache_dir=False)
    assert raw.X_train.shape[-1] == 3
    np.testing.assert_array_equal(raw.X_train[0], np.repeat(gray[("train", "ant", 0)][..., None], 3, axis=2))
    np.testing.assert_array_equal(raw.X_test[-1], rgb)


def test_pool_decoding_matches_in_process(tmp_path, monkeypatch):
    write_image_tree(tmp_path / "tree", per_class=(5, 3))
    archive = tar_tree(tmp_path / "tree", tmp_path / "t.tar.gz", "top")
    monkeypatch.setattr(decode, "_CHUNK_SIZE", 4)  # several chunks -> the pool starts
    for root in (tmp_path / "tree", archive):
        _assert_same(load_image_folder(root, cache_dir=False, num_workers=0),
                     load_image_folder(root, cache_dir=False, num_workers=2))


def test_missing_image_folder_explains_layout(tmp_path):
    layout = r"(?s)not found.*ROOT/train/<class>.*cifar10-jpeg\.tar\.gz.*download=True"
    with pytest.raises(FileNotFoundError, match=layout):
        load_image_folder(tmp_path / "nope")


def test_missing_test_split(tmp_path):
    write_image_tree(tmp_path / "tree")
    for f in (tmp_path / "tree" / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((tmp_path / "tree" / "test").iterdir()):
        d.rmdir()
    (tmp_path / "tree" / "test").rmdir()
    with pytest.raises(FileNotFoundError, match=r"test is not a folder"):
        load_image_folder(tmp_path / "tree", cache_dir=False)


def test_archive_without_tree(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.txt").write_text("hi")
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "x", arcname="x")
    with pytest.raises(FileNotFoundError, match=r"no folder with both train/<class>/ and test/<class>/"):
        load_image_folder(archive, cache_dir=False)


def test_file_that_is_not_an_archive(tmp_path):
    (tmp_path / "images.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match=r"images\.tar\.gz is neither a folder nor a tar archive"):
        load_image_folder(tmp_path / "images.tar.gz", cache_dir=False)


def _break_tree(root: Path, how: str) -> None:
    if how == "mixed sizes":
        Image.fromarray(np.zeros((5, 8, 3), np.uint8)).save(root / "train" / "dog" / "0001.png")
    elif how == "empty class":
        for f in (root / "train" / "cat").iterdir():
            f.unlink()
    elif how == "one class":
        for split in ("train", "test"):
            for name in ("ant", "dog"):
                for f in (root / split / name).iterdir():
                    f.unlink()
                (root / split / name).rmdir()
    elif how == "classes differ":
        (root / "test" / "dog").rename(root / "test" / "dingo")


@pytest.mark.parametrize(
    "how, about, message",
    [
        ("mixed sizes", "train/dog/0001.png", r": image is 5x8 \(H x W\), the others are 6x8; all images must be one size"),
        ("empty class", "train/cat", r": class folder has no PNG or JPEG images"),
        ("one class", "train", r" must hold at least two class folders, found 1: \['cat'\]"),
        ("classes differ", "test",
         r" must hold the same class folders as .*missing from test: \['dog'\], only in test: \['dingo'\]"),
    ],
)
@pytest.mark.parametrize("source", ["folder", "tar.gz"])
def test_image_folder_errors(tmp_path, how, about, message, source):
    write_image_tree(tmp_path / "tree")
    _break_tree(tmp_path / "tree", how)
    root = tmp_path / "tree" if source == "folder" else tar_tree(tmp_path / "tree", tmp_path / "t.tar.gz", "top")
    about = f"{root.resolve()}/{about}" if source == "folder" else f"{root.resolve()}:top/{about}"
    with pytest.raises(DataError, match="^" + re.escape(about) + message):  # the path first, then what is wrong
        load_image_folder(root, cache_dir=False)


# --------------------------------------------------------------------------- RawDataset
@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_out_of_range(bad):
    raw = make_raw()
    y = raw.y_train.copy()
    y[4] = bad
    with pytest.raises(ValueError, match=rf"y_train labels must be in \[0, 2\] for 3 classes, got {bad}"):
        RawDataset(raw.X_train, y, raw.X_test, raw.y_test, raw.class_names)


def test_rawdataset_shape_checks():
    raw = make_raw()
    with pytest.raises(ValueError, match=r"X_train must be a uint8 array of shape \(N, H, W, C\), got float32"):
        RawDataset(raw.X_train.astype(np.float32), raw.y_train, raw.X_test, raw.y_test, raw.class_names)
    with pytest.raises(ValueError, match=r"y_test must be an integer array of shape \(15,\)"):
        RawDataset(raw.X_train, raw.y_train, raw.X_test, raw.y_test[:-1], raw.class_names)


# --------------------------------------------------------------------------- preprocess
def test_preprocess_shapes_and_bias_column():
    raw = make_raw()
    out = preprocess(raw)
    D = 4 * 5 * 3 + 1
    assert out["X_train"].shape == (120, D) and out["X_val"].shape == (30, D) and out["X_test"].shape == (15, D)
    assert out["y_train"].shape == (120,) and out["y_val"].shape == (30,) and out["y_test"].shape == (15,)
    for split in ("train", "val", "test"):
        assert torch.all(out[f"X_{split}"][:, -1] == 1)
        assert out[f"y_{split}"].dtype == torch.int64
    assert out["image_shape"] == (4, 5, 3) and out["class_names"] == ["c0", "c1", "c2"]
    assert out["mean"].shape == (3,)
    assert preprocess(raw, bias_trick=False)["X_train"].shape == (120, D - 1)


def test_preprocess_values_match_the_assignment_recipe():
    raw = make_raw()
    out = preprocess(raw, dtype=torch.float64)
    ids = _row_ids(preprocess(raw, scale=False, subtract_mean=False, bias_trick=False)["X_train"])
    train = raw.X_train[ids].astype(np.float64) / 255
    mean = train.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(out["mean"].numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(out["X_train"][:, :-1].numpy(), (train - mean).reshape(len(ids), -1), atol=1e-12)
    test = raw.X_test.astype(np.float64) / 255 - mean  # test keeps its order and uses the training mean
    np.testing.assert_allclose(out["X_test"][:, :-1].numpy(), test.reshape(len(test), -1), atol=1e-12)


def test_stratified_split_counts_and_disjoint():
    raw = make_raw(per_class=50)
    out = preprocess(raw, validation_ratio=0.2, scale=False, subtract_mean=False, bias_trick=False, dtype=torch.float64)
    assert torch.bincount(out["y_val"], minlength=3).tolist() == [10, 10, 10]
    assert torch.bincount(out["y_train"], minlength=3).tolist() == [40, 40, 40]
    train_ids, val_ids = _row_ids(out["X_train"]), _row_ids(out["X_val"])
    assert sorted(np.concatenate([train_ids, val_ids]).tolist()) == list(range(150))
    np.testing.assert_array_equal(raw.y_train[val_ids], out["y_val"].numpy())  # labels follow their rows


def test_stratified_split_uneven_classes():
    rng = np.random.default_rng(1)
    raw = RawDataset(rng.integers(0, 256, (10, 2, 2, 1), dtype=np.uint8), np.array([0] * 7 + [1] * 3),
                     np.zeros((1, 2, 2, 1), np.uint8), np.array([0]), ["a", "b"])
    out = preprocess(raw, validation_ratio=0.5)
    counts = torch.bincount(out["y_val"], minlength=2).tolist()
    assert sum(counts) == 5 and counts[0] in (3, 4) and counts[1] in (1, 2)


def test_training_mean_is_zero_after_subtraction():
    out = preprocess(make_raw(), bias_trick=False)
    per_channel = out["X_train"].view(len(out["X_train"]), -1, 3).mean(dim=(0, 1))
    torch.testing.assert_close(per_channel, torch.zeros(3), atol=1e-6, rtol=0)
    assert torch.all(out["mean"] > 0.3) and torch.all(out["mean"] < 0.7)  # uniform pixels / 255


def test_seeded_reproducibility():
    raw = make_raw()
    a, b, c = preprocess(raw, seed=3), preprocess(raw, seed=3), preprocess(raw, seed=4)
    for key in ("X_train", "y_train", "X_val", "y_val", "X_test"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["X_val"], c["X_val"])


def test_subsample_after_split_keeps_validation():
    raw = make_raw()
    full = preprocess(raw, seed=5)
    small = preprocess(raw, seed=5, num_train=30, num_val=7, num_test=4)
    assert small["X_train"].shape[0] == 30 and small["X_val"].shape[0] == 7 and small["X_test"].shape[0] == 4
    plain = dict(scale=False, subtract_mean=False, bias_trick=False, seed=5)
    ids_full = _row_ids(preprocess(raw, **plain)["X_val"])
    ids_small = _row_ids(preprocess(raw, num_train=30, **plain)["X_val"])
    np.testing.assert_array_equal(ids_full, ids_small)  # num_train does not move the validation set
    assert full["X_val"].shape[0] == 30


def test_zero_validation_ratio_gives_empty_val():
    out = preprocess(make_raw(), validation_ratio=0)
    assert out["X_val"].shape == (0, 61) and out["y_val"].shape == (0,)
    assert out["X_train"].shape == (150, 61)


def test_no_scale_no_mean_keeps_pixels():
    raw = make_raw()
    out = preprocess(raw, scale=False, subtract_mean=False, bias_trick=False)
    np.testing.assert_array_equal(out["X_test"].numpy(), raw.X_test.reshape(15, -1).astype(np.float32))
    assert torch.equal(out["mean"], torch.zeros(3))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device(dtype, device):
    out = preprocess(make_raw(), dtype=dtype, device=device)
    for split in ("train", "val", "test"):
        assert out[f"X_{split}"].dtype == dtype and out[f"X_{split}"].device.type == device
        assert out[f"y_{split}"].dtype == torch.int64 and out[f"y_{split}"].device.type == device
    assert out["mean"].dtype == dtype and out["mean"].device.type == device


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"validation_ratio": 1.5}, r"validation_ratio must be in \[0, 1\), got 1.5"),
        ({"validation_ratio": 1}, r"validation_ratio must be in \[0, 1\), got 1"),
        ({"validation_ratio": -0.1}, r"validation_ratio must be in \[0, 1\), got -0.1"),
        ({"validation_ratio": "0.2"}, r"validation_ratio must be in \[0, 1\), got '0.2'"),
        ({"dtype": torch.int32}, r"dtype must be a floating-point torch.dtype .*, got torch.int32"),
        ({"device": "toaster"}, r"device must be a torch.device or a string .*, got 'toaster'"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"num_train": 0}, r"num_train must be an integer >= 1, got 0"),
        ({"num_train": 121}, r"num_train must be <= 120 \(the train split size\), got 121"),
        ({"num_val": 31}, r"num_val must be <= 30 \(the val split size\), got 31"),
        ({"num_test": 2.5}, r"num_test must be an integer >= 0, got 2.5"),
        ({"validation_ratio": 0.999}, r"validation_ratio=0.999 leaves no training examples out of 150"),
    ],
)
def test_preprocess_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        preprocess(make_raw(), **kwargs)


def test_preprocess_rejects_non_dataset():
    with pytest.raises(TypeError, match="raw must be a RawDataset"):
        preprocess({"X_train": np.zeros(3)})


# --------------------------------------------------------------------------- real data (optional)
@pytest.mark.slow
@pytest.mark.skipif(not REAL_JPEG_ARCHIVE.is_file(), reason=f"{REAL_JPEG_ARCHIVE} not present")
def test_real_cifar10_jpeg_archive(tmp_path):
    raw = load_image_folder(REAL_JPEG_ARCHIVE, cache_dir=tmp_path)
    assert raw.X_train.shape == (50000, 32, 32, 3) and raw.X_test.shape == (10000, 32, 32, 3)
    assert raw.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(raw.y_train).tolist() == [5000] * 10 and np.bincount(raw.y_test).tolist() == [1000] * 10

    (cache_file,) = tmp_path.iterdir()  # the second load hits it (a miss would decode and write it again)
    before = cache_file.stat().st_mtime_ns
    cached = load_image_folder(REAL_JPEG_ARCHIVE, cache_dir=tmp_path)
    assert cache_file.stat().st_mtime_ns == before and list(tmp_path.iterdir()) == [cache_file]
    _assert_same(raw, cached)

    out = preprocess(cached)
    assert out["X_train"].shape == (40000, 3073) and out["X_val"].shape == (10000, 3073)
    assert torch.bincount(out["y_val"]).tolist() == [1000] * 10
