"""Optuna side of a sweep: storage with heartbeats, samplers, pruners, the study lock, the
trial budget and retries. Shared by every worker of a study.

Many workers run the same sweep command against one storage. Asking trials happens under a
per-study lock (PostgreSQL advisory lock, or a file lock for SQLite), so the budget check and
the asks are atomic: the study ends with exactly ``n_trials`` counted trials and a grid is
never sampled twice. A trial whose worker dies stops sending heartbeats; any live worker fails
it after the grace period and re-queues it once with the same params.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import optuna
import warnings
try:  # Optuna >= 4.9 renamed the retry callback
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryFailedTrialCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from .search_space import SearchSpaceError, grid_values

log = logging.getLogger(__name__)
# fail_stale_trials and heartbeats are stable in practice; don't warn on every ask.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# We record heartbeats ourselves for ask/tell (class Heartbeat below).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "successive_halving", "hyperband")

# Trial user attributes written by the sweep (Optuna -> MLflow link and failure reasons).
ATTR_RUN_ID = "mlflow_run_id"
ATTR_FAIL_REASON = "fail_reason"
FAIL_INTERRUPTED = "interrupted"
FAIL_STALE = "worker died (no heartbeat)"


def sampler_options(name: str, kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Options for sampler ``name``: flat keys, plus those nested under its name.

    Presets nest their options (``sampler_kwargs: {tpe: {multivariate: true}}``) so that
    switching the sampler on the command line doesn't hand TPE's options to another sampler.
    """
    kwargs = dict(kwargs or {})
    nested = kwargs.pop(name, None) or {}
    for other in SAMPLERS:
        kwargs.pop(other, None)
    return {**kwargs, **dict(nested)}


def make_sampler(name: str, seed: Optional[int], search_space, kwargs: Dict[str, Any]) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name; grid enumerates the search space (choice/range only)."""
    kwargs = sampler_options(name, kwargs)
    if name == "tpe":
        kwargs.setdefault("constant_liar", True)  # batched and parallel asks see running trials
        return optuna.samplers.TPESampler(seed=seed, **kwargs)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **kwargs)
    if name == "grid":
        grid = {k: grid_values(k, d) for k, d in search_space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed, **kwargs)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **kwargs)
    if name == "qmc":
        kwargs.setdefault("warn_asynchronous_seeding", False)
        return optuna.samplers.QMCSampler(seed=seed, **kwargs)
    raise ValueError(f"hydra.sweeper.sampler must be one of {list(SAMPLERS)}, got {name!r}")


def grid_size(search_space) -> int:
    n = 1
    for k, d in search_space.items():
        n *= len(grid_values(k, d))
    return n


def make_pruner(name: str, kwargs: Dict[str, Any]) -> optuna.pruners.BasePruner:
    kwargs = dict(kwargs or {})
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        kwargs.setdefault("n_startup_trials", 5)
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**kwargs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    raise ValueError(f"hydra.sweeper.pruner must be one of {list(PRUNERS)}, got {name!r}")


class StaleTrialHandler:
    """Called by Optuna for each trial it fails for lack of heartbeats: re-queue it once and
    let the tracking side mark its run KILLED (``on_failed`` is set by the sweep)."""

    def __init__(self, max_retries: int):
        self._retry = RetryFailedTrialCallback(max_retry=max_retries)
        self.before_failing: Optional[Callable[[FrozenTrial], None]] = None  # while it can still be updated
        self.on_failed: Optional[Callable[[FrozenTrial, str], None]] = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # The trial is FAIL already (attributes frozen): fail_stale_trials wrote its reason.
        log.warning("trial %d of %s: %s; re-queued", trial.number, study.study_name, FAIL_STALE)
        if self.on_failed is not None:
            self.on_failed(trial, FAIL_STALE)
        self._retry(study, trial)

    def retry(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Re-queue a trial that failed through no fault of its params (Ctrl-C)."""
        self._retry(study, study._storage.get_trial(trial._trial_id))


def fail_stale_trials(study: optuna.Study) -> None:
    """optuna.storages.fail_stale_trials, but each trial's fail_reason (and, through the
    handler's ``before_failing``, its MLflow run link) is written before it is failed: Optuna
    calls the stale callback once the trial is FAIL, when it can't be updated."""
    storage = study._storage
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is None:
        return
    callback = storage.get_heartbeat_stale_trial_callback()
    before_failing = getattr(callback, "before_failing", None)
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        try:
            if before_failing is not None:
                before_failing(storage.get_trial(trial_id))
            storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, FAIL_STALE)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile, by its own worker or another one
        if callback is not None:
            callback(study, storage.get_trial(trial_id))


def make_storage(url: Optional[str], heartbeat_interval: int, grace_period: Optional[int],
                 handler: StaleTrialHandler) -> optuna.storages.BaseStorage:
    """RDB storage with heartbeats for a URL (relative sqlite paths become absolute)."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    url = absolute_sqlite_url(url)
    engine_kwargs: Dict[str, Any] = {}
    if url.startswith("sqlite"):
        from .tracking import tune_sqlite

        tune_sqlite()
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait on the file lock, not fail
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with _schema_lock(url):
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 3 * heartbeat_interval,
            heartbeat_stale_trial_callback=handler,
        )


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
    key = zlib.crc32(b"linear-sweeps:optuna-schema")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def absolute_sqlite_url(url: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/path/relative.db (workers may change folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialize budget checks and asks of one study across processes and hosts."""
    if isinstance(storage, optuna.storages.RDBStorage):
        url = str(storage.engine.url)
        if url.startswith("postgresql"):
            from sqlalchemy import text

            key = zlib.crc32(f"linear-sweeps:{study_name}".encode())
            with storage.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        if url.startswith("sqlite") and storage.engine.url.database:
            lock_path = Path(storage.engine.url.database + ".lock")
            with open(lock_path, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
    with _LOCAL_LOCK:
        yield


_LOCAL_LOCK = threading.Lock()


def counted_trials(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    """Trials that use up the budget: all but failed ones that were re-queued (their retry counts)."""
    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in retried)]


def remaining_budget(study: optuna.Study, n_trials: int) -> int:
    return max(0, n_trials - len(counted_trials(study.get_trials(deepcopy=False))))


def ask_new_trial(study: optuna.Study, fixed_distributions: Dict[str, Any]) -> optuna.Trial:
    """``study.ask(fixed_distributions)`` for a caller that knows no trial is WAITING.

    Every ``ask()`` first scans the storage for WAITING trials, and the cached storage rereads
    every unfinished trial to do so: asking a batch of k trials one by one reads O(k^2) rows
    (about half of a 50-trial ask on SQLite). The sweep checks the queue once per batch (under
    the study lock) and creates the rest here, exactly as ``ask()`` does after finding no
    WAITING trial. Falls back to ``ask()`` if Optuna's internals differ.
    """
    local = getattr(study, "_thread_local", None)
    if local is None or not hasattr(local, "cached_all_trials") or not hasattr(optuna.Trial, "_suggest"):
        return study.ask(fixed_distributions=fixed_distributions)
    local.cached_all_trials = None  # as ask(): the sampler sees the trials asked before this one
    trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id))
    for name, distribution in fixed_distributions.items():
        trial._suggest(name, distribution)
    return trial


def askable(study: optuna.Study, n_trials: int) -> int:
    """How many trials a worker may ask now: the budget left plus the re-queued (WAITING)
    trials, which the budget counts already but someone still has to run (ask pops them first)."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(0, n_trials - len(counted_trials(trials))) + waiting


class Heartbeat:
    """Records heartbeats for the trials this worker is running (ask/tell has no built-in one)."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float):
        self._storage = storage
        self._enabled = isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None
        self._interval = interval
        self._trial_ids: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "Heartbeat":
        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

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
            _record_heartbeats(self._storage, list(trial_ids))
        except Exception as e:  # a missed beat is retried next interval
            log.debug("heartbeat for trials %s failed: %s", sorted(trial_ids), e)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trial_ids)
            self._beat(ids)


def _record_heartbeats(storage: optuna.storages.RDBStorage, trial_ids: List[int]) -> None:
    """``storage.record_heartbeat`` for many trials in one transaction.

    Optuna's own call is one ORM session and commit per trial: for a batch of 50 running
    trials, about 0.2 s of CPU per beat, taken from training on a small machine. The rows
    and the database-side timestamp are the ones Optuna writes and its stale check reads.
    """
    import sqlalchemy as sa

    try:
        from optuna.storages._rdb.models import TrialHeartbeatModel

        table, engine = TrialHeartbeatModel.__table__, storage.engine
    except (ImportError, AttributeError):  # other Optuna internals: one trial at a time
        for tid in trial_ids:
            storage.record_heartbeat(tid)
        return
    with engine.begin() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar()
        have = set(conn.execute(sa.select(table.c.trial_id).where(table.c.trial_id.in_(trial_ids))).scalars())
        if have:
            conn.execute(table.update().where(table.c.trial_id.in_(have)).values(heartbeat=now))
        new = [tid for tid in trial_ids if tid not in have]
        if new:
            conn.execute(table.insert(), [{"trial_id": tid, "heartbeat": now} for tid in new])


def check_sampler_space(sampler: str, search_space) -> None:
    if not search_space:
        raise SearchSpaceError("hydra.sweeper.params is empty: give a search space, e.g. "
                               "model.learning_rate='tag(log, interval(1e-4, 1))' (or a sweep preset: sweep=tpe)")
    if sampler == "grid":
        for k, d in search_space.items():
            grid_values(k, d)
