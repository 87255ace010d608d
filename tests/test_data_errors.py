"""One clear line per bad input: every data error names the file, then says what is wrong.

Each case builds one bad dataset in tmp_path and returns (load, about, rule): ``load()`` must
raise DataError whose first line is ``<about><rule>``, i.e. starts with the file or folder.
"""
from __future__ import annotations

import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linear_models.data import DataError, UnsafePickleError, load_cifar10, load_image_folder
from test_data import CIFAR_NAMES, _RunsShell, tar_folder, tar_tree, write_cifar_folder, write_image_tree


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEAR_SWEEPS_CACHE", str(tmp_path / "default-cache"))


def _tree(tmp_path: Path) -> Path:
    write_image_tree(tmp_path / "tree")  # classes ant, cat, dog; 3 train + 2 test images of 6x8 each
    return (tmp_path / "tree").resolve()


def _image_folder(root, **kwargs):
    return lambda: load_image_folder(root, cache_dir=False, num_workers=0, **kwargs)


def _cifar(root, **kwargs):
    return lambda: load_cifar10(root, cache_dir=False, **kwargs)


# --------------------------------------------------------------------------- image trees
def empty_class_folder(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    return _image_folder(root), root / "test" / "dog", r": class folder has no PNG or JPEG images"


def mixed_image_sizes(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "cat" / "0001.png")
    return _image_folder(root), root / "test" / "cat" / "0001.png", r": image is 8x8 \(H x W\), the others are 6x8"


def only_one_class(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    write_image_tree(root, classes=("cat",))
    root = root.resolve()
    return _image_folder(root), root / "train", r" must hold at least two class folders, found 1: \['cat'\]"


def class_only_in_test(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    (root / "test" / "zebra").mkdir()
    (root / "test" / "cat" / "0000.png").rename(root / "test" / "zebra" / "0000.png")
    return _image_folder(root), root / "test", r" must hold the same class folders as .*only in test: \['zebra'\]"


def root_is_a_fifo(tmp_path, monkeypatch):
    root = tmp_path / "images"
    os.mkfifo(root)
    return _image_folder(root), root.resolve(), r" is neither a folder nor an archive"


def root_is_not_an_archive(tmp_path, monkeypatch):
    root = tmp_path / "images.tar.gz"
    root.write_bytes(b"not a tar")
    return _image_folder(root), root.resolve(), r" is neither a folder nor a tar archive"


def truncated_tar_gz(tmp_path, monkeypatch):
    archive = tar_tree(_tree(tmp_path), tmp_path / "t.tar.gz", "top")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return _image_folder(archive), archive, r": the archive is truncated or corrupt \(EOFError"


def truncated_tar_gz_header(tmp_path, monkeypatch):
    archive = tar_tree(_tree(tmp_path), tmp_path / "t.tar.gz", "top")
    archive.write_bytes(archive.read_bytes()[:30])  # not even the first member's header
    return _image_folder(archive), archive, r": the archive is truncated or corrupt"


def undecodable_image(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    (root / "train" / "ant" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    return _image_folder(root), root / "train" / "ant" / "0002.png", r": cannot decode image"


def _bomb(tmp_path, monkeypatch, side: int):
    root = _tree(tmp_path)
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(root / "train" / "dog" / "0001.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 6x8 images stay under it
    return _image_folder(root), root / "train" / "dog" / "0001.png"


def decompression_bomb_error(tmp_path, monkeypatch):  # over twice the limit: Pillow raises
    load, about = _bomb(tmp_path, monkeypatch, 50)
    return load, about, r": refusing to decode a possible decompression bomb \(Image size \(2500 pixels\)"


def decompression_bomb_warning(tmp_path, monkeypatch):  # between once and twice: Pillow only warns
    load, about = _bomb(tmp_path, monkeypatch, 40)
    return load, about, r": image is 40x40 = 1600 pixels, over Pillow's decompression-bomb limit of 1000"


def symlink_image_outside_root(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    outside = tmp_path / "elsewhere.png"
    (root / "train" / "cat" / "0000.png").rename(outside)
    (root / "train" / "cat" / "0000.png").symlink_to(outside)
    return _image_folder(root), root / "train" / "cat" / "0000.png", r": symlink to .*elsewhere\.png, outside the dataset root"


def symlink_class_folder_outside_root(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    (root / "test" / "dog").rename(tmp_path / "dogs")
    (root / "test" / "dog").symlink_to(tmp_path / "dogs", target_is_directory=True)
    return _image_folder(root), root / "test" / "dog", r": symlink to .*dogs, outside the dataset root"


def archive_link_outside_root(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    archive = tmp_path / "t.tar.gz"
    link = tarfile.TarInfo("top/train/cat/9999.png")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
    tar_folder(root, archive, "top", extra=[(link, None)])
    return (_image_folder(archive), f"{archive}:top/train/cat/9999.png",
            r": refusing to read this member: it links to '\.\./\.\./\.\./\.\./etc/passwd', outside the archive")


# --------------------------------------------------------------------------- CIFAR-10 python format
def _cifar_folder(tmp_path) -> Path:
    write_cifar_folder(tmp_path / "cifar-10-batches-py")
    return (tmp_path / "cifar-10-batches-py").resolve()


def unsafe_pickle(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _RunsShell("true"), b"labels": []}, protocol=2))
    return _cifar(folder), folder / "data_batch_2", r": refusing to unpickle it: it references the global \S*system"


def damaged_pickle(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    return _cifar(folder), folder / "test_batch", r": not a readable pickle, the file is truncated or damaged"


def label_out_of_range(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    batch = pickle.loads((folder / "data_batch_3").read_bytes(), encoding="bytes")
    batch[b"labels"][2] = len(CIFAR_NAMES) + 4
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    return (_cifar(folder), folder / "data_batch_3",
            r": label 7 at row 2 is out of range: batches.meta names 3 classes, so labels must be in \[0, 2\]")


def missing_batch(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    (folder / "data_batch_5").unlink()
    # download=True with a URL that leads nowhere: the folder is found, so nothing is downloaded.
    load = _cifar(folder, download=True, url=(tmp_path / "no-such-archive.tar.gz").as_uri())
    return load, folder / "data_batch_5", r": file missing; a cifar-10-batches-py folder holds data_batch_1"


def md5_mismatch(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    tar_folder(folder, archive, "cifar-10-batches-py")
    return _cifar(archive, md5="0" * 32), archive, r" has md5 [0-9a-f]{32}, expected 0{32}: the file is corrupt"


def truncated_cifar_archive(tmp_path, monkeypatch):  # the md5 given is the truncated file's own
    folder = _cifar_folder(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    tar_folder(folder, archive, "cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    from linear_models.data.safe_io import md5_of
    return _cifar(archive, md5=md5_of(archive)), archive, r": the archive is truncated or corrupt \(EOFError"


def symlink_batch_outside_folder(tmp_path, monkeypatch):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").rename(tmp_path / "test_batch")
    (folder / "test_batch").symlink_to(tmp_path / "test_batch")
    return _cifar(folder), folder / "test_batch", r": symlink to .*test_batch, outside the dataset root"


BAD_INPUTS = [
    empty_class_folder, mixed_image_sizes, only_one_class, class_only_in_test, root_is_a_fifo,
    root_is_not_an_archive, truncated_tar_gz, truncated_tar_gz_header, undecodable_image,
    decompression_bomb_error, decompression_bomb_warning, symlink_image_outside_root,
    symlink_class_folder_outside_root, archive_link_outside_root,
    unsafe_pickle, damaged_pickle, label_out_of_range, missing_batch, md5_mismatch,
    truncated_cifar_archive, symlink_batch_outside_folder,
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.__name__ for case in BAD_INPUTS])
def test_bad_input_raises_one_line_naming_the_file(tmp_path, monkeypatch, case):
    load, about, rule = case(tmp_path, monkeypatch)
    with pytest.raises(DataError, match="^" + re.escape(str(about)) + rule):  # the path first, then the rule
        load()


def test_unsafe_pickle_is_still_an_unpickling_error(tmp_path, monkeypatch):
    load, _, _ = unsafe_pickle(tmp_path, monkeypatch)
    with pytest.raises(UnsafePickleError) as info:
        load()
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, DataError)


def test_missing_batch_is_not_reported_as_a_download_failure(tmp_path, monkeypatch):
    load, _, _ = missing_batch(tmp_path, monkeypatch)
    with pytest.raises(DataError) as info:
        load()
    # Not an OSError: callers that turn OSErrors into "could not be downloaded" let it through.
    assert not isinstance(info.value, OSError)
    assert "download" not in str(info.value)


def test_symlinks_inside_the_root_are_followed(tmp_path):
    root = _tree(tmp_path)
    (root / "spare").mkdir()
    (root / "train" / "cat" / "0000.png").rename(root / "spare" / "cat.png")
    (root / "train" / "cat" / "0000.png").symlink_to(root / "spare" / "cat.png")
    raw = load_image_folder(tmp_path / "tree", cache_dir=False)
    assert raw.X_train.shape[0] == 9


def test_archive_link_inside_the_archive_is_read_as_its_target(tmp_path):
    root = _tree(tmp_path)
    archive = tmp_path / "t.tar.gz"
    link = tarfile.TarInfo("top/train/cat/0003.png")
    link.type, link.linkname = tarfile.SYMTYPE, "0000.png"
    tar_folder(root, archive, "top", extra=[(link, None)])
    raw = load_image_folder(archive, cache_dir=False)
    assert raw.X_train.shape[0] == 10  # the link counts as a fourth cat
    np.testing.assert_array_equal(raw.X_train[6], raw.X_train[3])  # rows: ant 0-2, cat 0000-0003, dog
