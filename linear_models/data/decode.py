"""Decoding PNG/JPEG images, in this process or in a pool of worker processes."""
from __future__ import annotations

import io
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from PIL import Image

from .errors import DataError

__all__ = ["Decoder"]

_CHUNK_SIZE = 2000  # images per decoding task: amortizes pickling, still overlaps tar reading


def _check_pixel_limit(name: str, im: Image.Image) -> None:
    """DataError for an image over Pillow's decompression-bomb limit.

    Pillow raises DecompressionBombError above twice ``Image.MAX_IMAGE_PIXELS`` and only
    warns between once and twice; both are refused here (None disables the limit, as in Pillow).
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = im.width * im.height
    if limit is not None and pixels > limit:
        raise DataError(f"{name}: image is {im.width}x{im.height} = {pixels} pixels, over Pillow's "
                        f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS); refusing to decode it")


def _decode_image(name: str, source: bytes | str) -> np.ndarray:
    """Decode one PNG/JPEG (its bytes or its path) -> (H, W) uint8 if grayscale, else (H, W, 3).

    ``name`` is the file (or ``archive:member``) every DataError starts with.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            _check_pixel_limit(name, im)
            if im.mode not in ("L", "RGB"):
                # 1-bit and gray+alpha stay gray; palette, RGBA, CMYK, ... become RGB (alpha dropped)
                im = im.convert("L" if im.mode in ("1", "LA", "La") else "RGB")
            return np.asarray(im)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning if made an error
        raise DataError(f"{name}: refusing to decode a possible decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow raises all three on bad files
        raise DataError(f"{name}: cannot decode image ({e})") from e


def _decode_chunk(items: list[tuple[str, bytes | str]]) -> list[np.ndarray]:
    return [_decode_image(name, source) for name, source in items]


class Decoder:
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
                    # Workers are forked, perhaps while another thread imports (a sweep decodes
                    # in the background while MLflow imports): a module lock held at the fork
                    # stays held in the child, and a child importing that module hangs forever.
                    # So every image plugin is imported here, before the fork.
                    from PIL import Image

                    Image.init()
                    self._pool = ProcessPoolExecutor(self.num_workers)
                self._jobs.append((self._pool.submit(_decode_chunk, chunk), chunk))
                return
            except (OSError, RuntimeError) as e:  # e.g. no /dev/shm, no fork in a sandbox
                warnings.warn(f"decoding images in this process: could not start worker processes ({e})")
                self.num_workers = 0
        self._jobs.append((None, _decode_chunk(chunk)))

    def finish(self) -> list[np.ndarray]:
        """All decoded images, in the order they were added; shuts the pool down."""
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

    def close(self) -> None:
        """Stop the pool without waiting for queued chunks (after an error while reading)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
