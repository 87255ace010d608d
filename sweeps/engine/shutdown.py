"""One interrupt path for SIGINT, SIGTERM and SIGHUP (Ctrl-C, `docker stop`, SLURM preemption,
`timeout`, a closed terminal).

The first signal raises :class:`SweepInterrupted` in the main thread, except inside a
``critical()`` section (asking trials, moving a trial between states), where it is held until
the section ends, so no trial is ever half-asked. Cleanup then runs once; signals that arrive
during it are logged and ignored (and, after the guard, ignored until the process has
exited), and a watchdog ends the process if cleanup outlasts
``timeout`` seconds (what cleanup did not finish, the next launch repairs through heartbeats).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Iterator, Optional

log = logging.getLogger(__name__)

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class ShutdownGuard:
    """Installs the signal handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.signum: Optional[int] = None  # the signal that started the stop
        self._held = 0  # depth of critical sections
        self._pending = False
        self._cleaning = False
        self._previous = {}
        self._watchdog: Optional[threading.Timer] = None

    def __enter__(self) -> "ShutdownGuard":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            # Stopped by a signal: the process is ending, and the same key pressed again while
            # it unwinds and exits must not cut that short (Python's default SIGINT would).
            signal.signal(s, signal.SIG_IGN if self.signum is not None else handler)
        self._previous.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self._cleaning or self.signum is not None:
            log.warning("%s: already stopping; open trials are being marked for the next launch "
                        "(at most %.0f s)", name, self.timeout)
            return
        self.signum = signum
        if self._held:
            self._pending = True
            return
        raise SweepInterrupted(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section a signal must not cut in two; the signal is raised once it ends."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._pending and not self._cleaning:
                self._pending = False
                raise SweepInterrupted(self.signum)

    @property
    def cleaning(self) -> bool:
        """Whether a stop (signal or error) has begun."""
        return self._cleaning

    def begin_cleanup(self, error: BaseException) -> None:
        """From here on signals are ignored; the process ends at the latest ``timeout`` s later."""
        if self._cleaning:
            return
        self._cleaning = True
        code = error.exit_code if isinstance(error, SweepInterrupted) else 1
        self._watchdog = threading.Timer(self.timeout, self._force_exit, args=(code,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _force_exit(self, code: int) -> None:
        print(f"linear-sweep: cleanup took more than {self.timeout:.0f} s (hydra.sweeper.shutdown_timeout); "
              f"stopping now: the next launch re-runs the trials left open", file=sys.stderr, flush=True)
        os._exit(code)
