"""The one exception type for bad dataset files, and the check helpers of linear_models.data.

Every error a user's files can cause (a missing, malformed or unsafe file or folder) is a
:class:`DataError` whose message is one line that starts with the path it is about and then
says what is wrong::

    /data/tree/train/dog/0001.png: image is 5x8 (H x W), but 17 of the 18 images are 6x8

Errors about a call's parameters (``validation_ratio must be in [0, 1), got 1.5``) stay
plain ValueError / TypeError: they name the parameter, not a file.
"""
from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError", "check", "rule"]


class DataError(ValueError):
    """A dataset file or folder is missing, malformed or unsafe.

    The message starts with the file, folder or archive member (``archive.tar.gz:member``)
    it is about, then says what is wrong and, where it helps, what was expected.
    """


class DataNotFoundError(DataError, FileNotFoundError):
    """The dataset, or one of its split folders, is not at the path given.

    Also a FileNotFoundError, so that ``except FileNotFoundError`` keeps catching a wrong path.
    """


def check(cond: bool, message: str, error: type[Exception] = DataError) -> None:
    """Raise ``error(message)`` unless ``cond``.

    Data messages start with the path; parameter messages use the library-wide format
    ``name must be <rule>, got <value>`` (see :func:`rule`) with ``error=ValueError``.
    """
    if not cond:
        raise error(message)


def rule(name: str, rule: str, value) -> str:
    """``name must be <rule>, got <value!r>``."""
    return f"{name} must be {rule}, got {value!r}"
