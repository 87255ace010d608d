"""Named points in a trial's life where the engine's tests inject a fault.

``LINEAR_SWEEPS_FAULT=<point>`` (or ``<point>:<n>``) raises :class:`InjectedFault` the n-th time
(default: the first) this process passes ``<point>``. Unset, :func:`check` is one dict lookup.
"""
from __future__ import annotations

import os
import threading

POINTS = ("ask", "create_run", "train", "record", "tell", "tell_write", "close_run", "finalize")
_ENV = "LINEAR_SWEEPS_FAULT"
_passed: dict = {}
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised by :func:`check` at the point named in LINEAR_SWEEPS_FAULT."""


def check(point: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    with _lock:
        _passed[point] = _passed.get(point, 0) + 1
        hit = _passed[point] == int(nth or 1)
    if hit:
        raise InjectedFault(f"fault injected at {point} ({_ENV}={wanted})")
