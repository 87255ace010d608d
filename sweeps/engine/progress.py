"""What a launch shows and counts while it runs: a progress bar (or log lines) per study, and
the launch's own figures (``this_launch`` in optimization_results.yaml)."""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

log = logging.getLogger(__name__)


class Progress:
    """A tqdm bar over a study's trials on a terminal; a log line every few seconds otherwise."""

    def __init__(self, name: str, total: int, done: int, enabled: Optional[bool], position: int = 0,
                 every: float = 5.0):
        self.name, self.total, self.done = name, total, done
        self._every = every
        self._shown_at = -math.inf
        self._lock = threading.Lock()
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="trial", dynamic_ncols=True, position=position)

    def update(self, n: int, best_value: Callable[[], Optional[float]]) -> None:
        """``best_value()`` (a storage query) is asked at most once a second, and at the end."""
        with self._lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            now = time.monotonic()
            interval = 1.0 if self.bar is not None else self._every
            if self.done < self.total and now - self._shown_at < interval:
                return
            self._shown_at = now
        best = best_value()
        if self.bar is not None:
            if best is not None:
                self.bar.set_postfix(best_val_acc=f"{best:.4f}")
        else:
            log.info("%s: %d/%d trials, best val_acc %s", self.name, self.done, self.total,
                     "n/a" if best is None else f"{best:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class LaunchStats:
    """This launch's share of a study. ``train``: stacked-model training (amortized per trial);
    ``tracking``: per-trial metrics and artifacts; ``bookkeeping``: configs, runs, tells."""

    trials_run: int = 0
    failed: int = 0
    seconds: Dict[str, float] = field(default_factory=lambda: {
        "train_seconds": 0.0, "tracking_seconds": 0.0, "bookkeeping_seconds": 0.0,
        # parts of bookkeeping, for benchmarks/sweep_scale.py
        "ask_seconds": 0.0, "create_run_seconds": 0.0, "tell_seconds": 0.0})
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    trained_at: float = field(default_factory=time.time)
    first_train_at: Optional[float] = None  # when this launch's first batch of the study began training
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, failed: bool, train: float = 0.0, tracking: float = 0.0, bookkeeping: float = 0.0) -> None:
        with self._lock:
            self.trials_run += 1
            self.failed += bool(failed)
            self.seconds["train_seconds"] += train
            self.seconds["tracking_seconds"] += tracking
            self.seconds["bookkeeping_seconds"] += bookkeeping

    def add_bookkeeping(self, seconds: float, part: str = "") -> None:
        """``part``: ask | create_run | tell, one of bookkeeping's parts (or none)."""
        with self._lock:
            self.seconds["bookkeeping_seconds"] += seconds
            if part:
                self.seconds[f"{part}_seconds"] += seconds

    def training_starts(self) -> None:
        if self.first_train_at is None:
            self.first_train_at = time.time()

    def failure_rate_exceeded(self, n_trials: int, max_rate: float) -> bool:
        return self.trials_run >= min(5, n_trials) and self.failed / self.trials_run > max_rate

    def as_dict(self, batch_size: int, wall: float, finalize: float) -> Dict[str, float]:
        return {"trials_run": self.trials_run, "batch_size": batch_size, "wall_seconds": round(wall, 3),
                **{k: round(v, 3) for k, v in self.seconds.items()}, "finalize_seconds": round(finalize, 3),
                "started_at": round(self.started_at, 3), "trained_at": round(self.trained_at, 3),
                "first_train_at": None if self.first_train_at is None else round(self.first_train_at, 3),
                "ended_at": round(time.time(), 3)}
