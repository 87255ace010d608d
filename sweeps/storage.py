"""Many workers, one study: the RDB storage, the per-study lock, heartbeats and stale trials.

Asking trials happens under a per-study lock (a PostgreSQL advisory lock, or a file lock for
SQLite), so the budget check and the asks are atomic across processes and hosts. A trial whose
worker dies stops sending heartbeats; any live worker fails it after the grace period (the
ledger closes its MLflow run) and re-queues it with the same params.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import adapter
from .db_urls import database_url
from .sqlite_pragmas import tune_sqlite

log = logging.getLogger(__name__)
# fail_stale_trials and heartbeats are stable in practice; don't warn on every ask.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# We record heartbeats ourselves for ask/tell (class Heartbeat below).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

FAIL_STALE = "worker died (no heartbeat)"


def absolute_sqlite_url(url: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/path/relative.db (workers may change folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def holds_no_study(url: Optional[str]) -> bool:
    """Whether the storage surely has no study yet (in memory, or an SQLite file not yet made):
    every study of the launch is new, and its MLflow parent run is created before training."""
    if url is None:
        return True
    url = absolute_sqlite_url(url)
    return url.startswith("sqlite:////") and not Path(url[len("sqlite:///"):].split("?", 1)[0]).exists()


def import_storage_modules(url: Optional[str]) -> None:
    """Import what opening an RDB storage needs (SQLAlchemy's ORM, Alembic: about 0.4 s), with
    nothing connected or created: a launch does it while its data loads in the background."""
    if url is not None:
        import alembic.migration  # noqa: F401
        import sqlalchemy.orm  # noqa: F401


def make_storage(url: Optional[str], heartbeat_interval: int, grace_period: int) -> optuna.storages.BaseStorage:
    """RDB storage with heartbeats for a URL (relative sqlite paths become absolute); in memory for None."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    url = database_url(absolute_sqlite_url(url), "hydra.sweeper.storage")  # postgresql://: the installed driver
    if url.startswith("sqlite"):
        tune_sqlite()
        engine_kwargs: Dict[str, Any] = {"connect_args": {"timeout": 60}}  # wait on the file lock, not fail
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with _schema_lock(url):
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period)


@contextlib.contextmanager
def _advisory_lock(engine, key: int) -> Iterator[None]:
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """PostgreSQL: workers starting together on an empty database would all create Optuna's
    tables and enum types at once and fail (duplicate pg_type); let one create them."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with _advisory_lock(engine, zlib.crc32(b"linear-sweeps:optuna-schema")):
            yield
    finally:
        engine.dispose()


_LOCAL_LOCK = threading.RLock()


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialize budget checks and asks of one study across processes and hosts."""
    if isinstance(storage, optuna.storages.RDBStorage):
        url = storage.engine.url
        if str(url).startswith("postgresql"):
            with _advisory_lock(storage.engine, zlib.crc32(f"linear-sweeps:{study_name}".encode())):
                yield
            return
        if str(url).startswith("sqlite") and url.database:
            with open(Path(url.database + ".lock"), "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
    with _LOCAL_LOCK:
        yield


class Heartbeat:
    """Beats for the trials this worker runs (ask/tell has no built-in beat). ``start``/``stop``
    are idempotent; the study session owns one and stops it in one place."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float):
        self._optuna_storage = storage
        self._enabled = (isinstance(storage, optuna.storages.RDBStorage)
                         and storage.get_heartbeat_interval() is not None)
        self._interval = interval
        self._trial_ids: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Heartbeat":
        if self._enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    def add(self, trial_ids) -> None:
        with self._lock:
            self._trial_ids.update(trial_ids)
        self._beat(trial_ids)

    def remove(self, trial_ids) -> None:
        with self._lock:
            self._trial_ids.difference_update(trial_ids)

    def _beat(self, trial_ids) -> None:
        if not self._enabled or not trial_ids:
            return
        try:
            adapter.record_heartbeats(self._optuna_storage, list(trial_ids))
        except Exception as e:  # a missed beat is retried next interval
            log.debug("heartbeat for trials %s failed: %s", sorted(trial_ids), e)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trial_ids)
            self._beat(ids)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, *,
                      before_failing: Callable[[FrozenTrial], None],
                      after_failing: Callable[[FrozenTrial], None]) -> int:
    """Fail the study's trials whose worker is gone; returns how many.

    Each trial's reason and (through ``before_failing``) its MLflow link are written while it
    can still be updated; ``after_failing`` gets it once FAIL (to close its run and re-queue).
    """
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.get_heartbeat_interval() is None:
        return 0
    failed = 0
    writer = adapter.storage_of(study)
    for tid in adapter.stale_trial_ids(storage, study, storage.grace_period):
        try:
            before_failing(writer.get_trial(tid))
            writer.set_trial_user_attr(tid, "fail_reason", FAIL_STALE)
            if not writer.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile, by its own worker or another one
        log.warning("trial %d of %s: %s; re-queued", writer.get_trial(tid).number, study.study_name, FAIL_STALE)
        after_failing(writer.get_trial(tid))
        failed += 1
    return failed


def running_trials(study: optuna.Study) -> List[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
