"""A line every few seconds while a long batch trains, where no terminal shows a progress bar.

A sweep's progress (engine/progress.py) moves when trials finish; a batch of long trials may
train for minutes before the first one does, and a log file or CI job would show nothing. The
ticker prints ``training 64 trials (softmax, svm): 40 s, iteration 750 of 1500`` every
``TICK_SECONDS`` until the batch is trained; the iteration is the trainer's last check point.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

TICK_SECONDS = 10.0


class TrainingTicker:
    """Context manager around one batch's training; ``step()`` says where it is."""

    def __init__(self, label: str, total: int, step: Callable[[], int], every: Optional[float] = None,
                 enabled: Optional[bool] = None):
        self.label, self.total, self.step = label, total, step
        self.every = TICK_SECONDS if every is None else every
        self.enabled = (not sys.stderr.isatty()) if enabled is None else enabled
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = 0.0

    def __enter__(self) -> "TrainingTicker":
        self._started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="training-ticker", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            log.info("%s: %.0f s, iteration %d of %d", self.label, time.monotonic() - self._started, self.step(),
                     self.total)
