"""Image trees ROOT/{train,test}/<class>/*.png|*.jpg, as a folder or a .tar(.gz) archive."""
from __future__ import annotations

import hashlib
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

from .._validation import check_int
from .cache import PathLike, cached, file_identity
from .decode import Decoder
from .errors import DataError, DataNotFoundError, check
from .raw import SPLITS, RawDataset
from .safe_io import ARCHIVE_READ_ERRORS, check_inside, corrupt_archive_error, unsafe_member_reason

__all__ = ["load_image_folder"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Leading bytes of gzip, bzip2 and xz streams: a file with one of them that tarfile cannot read
# is a damaged archive, not "something else".
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

_IMAGE_FOLDER_HELP = """\
Expected layout (PNG or JPEG files; labels follow the sorted class-folder names):
    ROOT/train/<class>/*.png|*.jpg
    ROOT/test/<class>/*.png|*.jpg
or a .tar.gz of that tree (directly or under one top-level folder).
To get CIFAR-10: pass the path to a JPEG copy in this layout (e.g. ../shared/datasets/cifar10-jpeg.tar.gz),
or use load_cifar10(root, download=True) for the official python batches."""

# A tree is {split: {class_name: [(file_name, display_name, index into the decoded images)]}}.
_Tree = dict[str, dict[str, list[tuple[str, str, int]]]]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(_IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- layout and stacking
def _check_tree(tree: _Tree, where: str) -> list[str]:
    """Check the split/class layout; return the sorted class names (label k = classes[k])."""
    for split in SPLITS:
        check(split in tree, f"{where} has no {split}/ folder.\n{_IMAGE_FOLDER_HELP}", DataNotFoundError)
    classes = sorted(tree["train"])
    check(len(classes) >= 2, f"{where}/train must hold at least two class folders, found {len(classes)}: {classes}")
    missing, extra = sorted(set(classes) - set(tree["test"])), sorted(set(tree["test"]) - set(classes))
    check(
        not missing and not extra,
        f"{where}/test must hold the same class folders as {where}/train: "
        f"missing from test: {missing}, only in test: {extra}",
    )
    for split in SPLITS:
        for name in classes:
            check(bool(tree[split][name]), f"{where}/{split}/{name}: class folder has no PNG or JPEG images "
                                           f"(every class needs some in train/ and in test/)")
    return classes


def _common_size(used: list[tuple[str, np.ndarray]]) -> tuple[int, int]:
    """The (H, W) of the images; DataError naming the first image of another size.

    The size most images have is taken as the right one (ties: the first image's), so the
    message names the odd image out, not the first one.
    """
    sizes = Counter(a.shape[:2] for _, a in used)
    (H, W), count = sizes.most_common(1)[0]
    if len(sizes) > 1:
        display, a = next((d, a) for d, a in used if a.shape[:2] != (H, W))
        others = "the others are" if count == len(used) - 1 else f"{count} of the {len(used)} images are"
        raise DataError(f"{display}: image is {a.shape[0]}x{a.shape[1]} (H x W), {others} {H}x{W}; "
                        "all images must be one size")
    return H, W


def _stack_tree(tree: _Tree, classes: list[str], images: list[np.ndarray]) -> RawDataset:
    """Stack the decoded images of each split into (N, H, W, C) uint8, ordered by class then file name.

    All images must share one size. C is 1 if every image is grayscale, else 3: grayscale
    images in a tree that also holds RGB ones are replicated over the three channels.
    """
    ordered = {  # split -> [(label, display name, image index)], by class then file name
        split: [(label, display, index)
                for label, c in enumerate(classes)
                for _, display, index in sorted(tree[split][c])]
        for split in SPLITS
    }
    used = [(display, images[index]) for split in SPLITS for _, display, index in ordered[split]]
    channels = 3 if any(a.ndim == 3 for _, a in used) else 1
    H, W = _common_size(used)
    arrays = {}
    for split in SPLITS:
        X = np.empty((len(ordered[split]), H, W, channels), dtype=np.uint8)
        for i, (_, _, index) in enumerate(ordered[split]):
            a = images[index]
            X[i] = a if a.ndim == 3 else a[..., None]  # (H, W, 1) broadcasts to C channels
        arrays[f"X_{split}"] = X
        arrays[f"y_{split}"] = np.array([label for label, _, _ in ordered[split]], dtype=np.int64)
    return RawDataset(**arrays, class_names=classes)


# --------------------------------------------------------------------------- folders
def _scan_dir_tree(root: Path) -> tuple[_Tree, list[str], str]:
    """List ROOT/{train,test}/<class>/<image> without decoding.

    Returns (tree, paths, identity): ``paths[i]`` is the file with index i in the tree, and
    identity hashes every relative path, size and mtime so that any change invalidates the cache.
    A symlink (split, class folder or image) must resolve inside ``root`` (resolved).
    """
    tree: _Tree = {}
    paths: list[str] = []
    lines = []
    for split in SPLITS:
        folder = root / split
        check(folder.is_dir(), f"{folder} is not a folder.\n{_IMAGE_FOLDER_HELP}", DataNotFoundError)
        if folder.is_symlink():
            check_inside(folder, root)
        tree[split] = {}
        for entry in os.scandir(folder):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if entry.is_symlink():
                check_inside(Path(entry.path), root)
            found = tree[split][entry.name] = []
            for f in os.scandir(entry.path):
                if _is_image(f.name) and f.is_file():
                    if f.is_symlink():
                        check_inside(Path(f.path), root)
                    found.append((f.name, f.path, len(paths)))
                    paths.append(f.path)
                    st = f.stat()
                    lines.append(f"{split}/{entry.name}/{f.name}\t{st.st_size}\t{st.st_mtime_ns}")
    lines.sort()
    identity = f"{root}\n" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return tree, paths, identity


def _decode_files(paths: list[str], num_workers: int) -> list[np.ndarray]:
    decoder = Decoder(num_workers)
    for path in paths:
        decoder.add(path, path)
    return decoder.finish()


# --------------------------------------------------------------------------- archives
def _open_tar(archive: Path) -> tarfile.TarFile:
    """Open ``archive`` for reading; DataError for a damaged archive or a file that is none."""
    try:
        return tarfile.open(archive, "r:*")
    except ARCHIVE_READ_ERRORS as e:
        with open(archive, "rb") as f:
            head = f.read(262)
        if head.startswith(_COMPRESSED_MAGIC) or head[257:262] == b"ustar":
            raise corrupt_archive_error(archive, e) from None
        why = str(e).replace(":\n- ", ": ").replace("\n- ", "; ")  # tarfile lists each method on a line
        raise DataError(f"{archive} is neither a folder nor a tar archive ({why}).\n{_IMAGE_FOLDER_HELP}") from None


def _member_bytes(tar: tarfile.TarFile, m: tarfile.TarInfo, archive: Path) -> bytes:
    """The content of a file member, or of the file a link member points to inside the archive."""
    if m.issym() or m.islnk():
        reason = unsafe_member_reason(m, "the archive")
        check(reason is None, f"{archive}:{m.name}: refusing to read this member: it {reason} "
                              "(only files inside the dataset root are read)")
    try:
        f = tar.extractfile(m)
    except KeyError:  # tarfile: a link whose target is not a member
        raise DataError(f"{archive}:{m.name}: link to {m.linkname!r}, which is not in the archive") from None
    check(f is not None, f"{archive}:{m.name}: link to {m.linkname!r}, which is not a file")
    return f.read()


def _scan_tar(tar: tarfile.TarFile, archive: Path, decoder: Decoder):
    """Queue every split/class/image member for decoding, in archive order.

    Returns (entries, class_dirs): entries (prefix, split, class, file, member) per queued
    image, class_dirs {(prefix, split, class)} (also empty class folders). Absolute, '..'
    and hidden members are skipped; link members follow the rule of :func:`_member_bytes`.
    """
    entries: list[tuple[tuple[str, ...], str, str, str, str]] = []
    class_dirs: set[tuple[tuple[str, ...], str, str]] = set()
    for m in tar:
        parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
        if m.name.startswith("/") or any(p.startswith(".") for p in parts):  # absolute, '..', hidden
            continue
        if m.isdir() and len(parts) >= 2 and parts[-2] in SPLITS:
            class_dirs.add((parts[:-2], parts[-2], parts[-1]))
        elif (m.isfile() or m.issym() or m.islnk()) and len(parts) >= 3 and parts[-3] in SPLITS \
                and _is_image(parts[-1]):
            decoder.add(f"{archive}:{m.name}", _member_bytes(tar, m, archive))
            entries.append((parts[:-3], parts[-3], parts[-2], parts[-1], m.name))
            class_dirs.add((parts[:-3], parts[-3], parts[-2]))
    return entries, class_dirs


def _tree_prefix(class_dirs: set, archive: Path) -> tuple[str, ...]:
    """The one folder of the archive that holds both train/<class>/ and test/<class>/."""
    splits_by_prefix: dict[tuple[str, ...], set[str]] = {}
    for prefix, split, _ in class_dirs:
        splits_by_prefix.setdefault(prefix, set()).add(split)
    candidates = sorted((p for p, s in splits_by_prefix.items() if s == set(SPLITS)), key=len)
    check(
        bool(candidates),
        f"{archive} holds no folder with both train/<class>/ and test/<class>/ images.\n{_IMAGE_FOLDER_HELP}",
        DataNotFoundError,
    )
    check(
        len(candidates) == 1 or len(candidates[0]) < len(candidates[1]),
        f"{archive} holds several image trees: {['/'.join(p) or '.' for p in candidates]}; pack one per archive",
    )
    return candidates[0]


def _read_tar_tree(archive: Path, num_workers: int) -> RawDataset:
    """Decode a .tar(.gz) of the image-folder tree from the archive in one pass, without extracting.

    The tree may sit at the archive root or under a folder: the folder holding both train/
    and test/ is found from the member names (split/class/file is the last three parts).
    """
    decoder = Decoder(num_workers)
    try:
        with _open_tar(archive) as tar:
            entries, class_dirs = _scan_tar(tar, archive, decoder)
    except ARCHIVE_READ_ERRORS as e:  # e.g. EOFError: a truncated .tar.gz
        decoder.close()
        raise corrupt_archive_error(archive, e) from None
    except BaseException:
        decoder.close()
        raise
    images = decoder.finish()

    prefix = _tree_prefix(class_dirs, archive)
    tree: _Tree = {split: {} for split in SPLITS}
    for p, split, name in class_dirs:
        if p == prefix:
            tree[split][name] = []
    for index, (p, split, name, file_name, member) in enumerate(entries):
        if p == prefix:
            tree[split][name].append((file_name, f"{archive}:{member}", index))
    where = f"{archive}:{'/'.join(prefix)}" if prefix else str(archive)
    classes = _check_tree(tree, where)
    return _stack_tree(tree, classes, images)


# --------------------------------------------------------------------------- entry point
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
        DataNotFoundError (a DataError and a FileNotFoundError): ``root``, train/ or test/ is
            missing (the message shows the layout).
        DataError, its message starting with the file or folder: fewer than two classes, an
            empty class folder, different class folders in train/ and test/, images of
            different sizes, an image that cannot be decoded or is over Pillow's
            decompression-bomb limit, a truncated archive, a root that is neither a folder nor
            an archive, or a link that leaves the root.

    Links: nothing outside the dataset root is read. In a folder, a symlink (split, class
    folder or image) is followed only when it resolves inside ``root``; in an archive, a link
    member is read as the file it points to when that stays inside the archive. Any other
    link is refused with a DataError naming it.
    """
    root = Path(root).expanduser()
    check(root.exists(), f"{root}: image folder not found\n{_IMAGE_FOLDER_HELP}", DataNotFoundError)
    root = root.resolve()
    if num_workers is None:
        num_workers = min((os.cpu_count() or 1) - 1, 8)
    num_workers = check_int("num_workers", num_workers, minimum=0)
    if root.is_file():
        return cached(cache_dir, "imagefolder", file_identity(root), lambda: _read_tar_tree(root, num_workers))
    check(root.is_dir(), f"{root} is neither a folder nor an archive (a device, FIFO or socket)")
    tree, paths, identity = _scan_dir_tree(root)
    classes = _check_tree(tree, str(root))  # layout errors come before any decoding
    return cached(
        cache_dir, "imagefolder", identity, lambda: _stack_tree(tree, classes, _decode_files(paths, num_workers))
    )
