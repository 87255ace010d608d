"""Every use of Optuna's and MLflow's private API, in one place.

The engine needs a few things the libraries' public APIs do not offer. Each function below says
what it relies on, why, and what public call it replaces or falls back to. The canary tests
(tests/test_optuna_adapter.py, tests/test_mlflow_adapter.py) fail with a clear message when a
release changes any of it; `pyproject.toml` admits only the releases they ran on.
"""
from __future__ import annotations

import datetime
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
from mlflow.entities import Metric
from optuna.trial import TrialState

# ====================================================================================== Optuna
log = logging.getLogger(__name__)

def trial_id(trial) -> int:
    """The storage id of a trial (``optuna.Trial`` or ``FrozenTrial``).

    Private: ``_trial_id``. Public alternative: none (``number`` is per study; the storage's
    calls and the heartbeat table are keyed by this id).
    """
    return trial._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (for an RDB storage, Optuna's caching
    wrapper around it). Private: ``Study._storage``. Public alternative: none; writing through
    the RDB storage the engine created would bypass the study's cache of unfinished trials."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage id of a study. Private: ``Study._study_id``; public alternative:
    ``storage.get_study_id_from_name(study.study_name)``, one query more."""
    return study._study_id


def stale_trial_ids(storage: optuna.storages.RDBStorage, study: optuna.Study, grace_period: float) -> List[int]:
    """RUNNING trials whose worker is gone: no heartbeat within ``grace_period`` seconds.

    Private: ``RDBStorage._get_stale_trial_ids`` (what ``optuna.storages.fail_stale_trials``
    uses); the public function fails the trials too, before the engine could write each one's
    reason and MLflow link. Optuna only sees trials that have a heartbeat row; a trial asked by
    a process that died before its first beat (or by an older linear-sweeps that never beat)
    has none, so those count as stale once they are ``grace_period`` old.
    """
    stale = set(storage._get_stale_trial_ids(study_id(study)))
    with_beat = _trials_with_heartbeat(storage, study)
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start
        if trial_id(t) not in with_beat and started is not None and started.replace(tzinfo=None) < cutoff:
            stale.add(trial_id(t))
    return sorted(stale)


def _heartbeat_table():
    """Optuna's heartbeat table. Private: ``optuna.storages._rdb.models.TrialHeartbeatModel``."""
    from optuna.storages._rdb.models import TrialHeartbeatModel

    return TrialHeartbeatModel.__table__


def _trials_with_heartbeat(storage: optuna.storages.RDBStorage, study: optuna.Study) -> set:
    import sqlalchemy as sa

    table = _heartbeat_table()
    ids = [trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if not ids:
        return set()
    with storage.engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.trial_id).where(table.c.trial_id.in_(ids))).scalars())


def record_heartbeats(storage: optuna.storages.RDBStorage, trial_ids: List[int]) -> None:
    """``storage.record_heartbeat`` for many trials in one transaction.

    Private: the heartbeat table (rows and database-side timestamps as Optuna writes them and
    its stale check reads them). Public alternative: ``record_heartbeat`` per trial, one ORM
    session and commit each: for 50 running trials ~0.2 s of CPU per beat on a small machine.
    """
    import sqlalchemy as sa

    table = _heartbeat_table()
    with storage.engine.begin() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar()
        have = set(conn.execute(sa.select(table.c.trial_id).where(table.c.trial_id.in_(trial_ids))).scalars())
        if have:
            conn.execute(table.update().where(table.c.trial_id.in_(have)).values(heartbeat=now))
        new = [tid for tid in trial_ids if tid not in have]
        if new:
            conn.execute(table.insert(), [{"trial_id": tid, "heartbeat": now} for tid in new])


def _rdb_backend(storage) -> Optional[optuna.storages.RDBStorage]:
    """The RDB storage under Optuna's caching wrapper (private: ``_CachedStorage._backend``)."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def set_user_attrs(study: optuna.Study, items: Sequence[Tuple[int, str, Any]]) -> None:
    """``storage.set_trial_user_attr`` for many (trial id, key, value) in one transaction.

    Only RUNNING trials are written (Optuna refuses to change a finished trial; the engine's
    callers write links of trials they just asked). Private: the user-attribute and trial
    tables, values stored as JSON as Optuna stores them. Public alternative:
    ``set_trial_user_attr`` per item, one transaction each.
    """
    import json

    import sqlalchemy as sa
    from optuna.storages._rdb.models import TrialModel, TrialUserAttributeModel

    backend = _rdb_backend(storage_of(study))
    if backend is None:
        for tid, key, value in items:
            storage_of(study).set_trial_user_attr(tid, key, value)
        return
    if not items:
        return
    attrs, trials = TrialUserAttributeModel.__table__, TrialModel.__table__
    ids = sorted({tid for tid, _, _ in items})
    with backend.engine.begin() as conn:
        running = set(conn.execute(sa.select(trials.c.trial_id).where(
            trials.c.trial_id.in_(ids), trials.c.state == TrialState.RUNNING)).scalars())
        rows = {(tid, key): {"trial_id": tid, "key": key, "value_json": json.dumps(value)}
                for tid, key, value in items if tid in running}
        for tid, key in rows:
            conn.execute(attrs.delete().where(attrs.c.trial_id == tid, attrs.c.key == key))
        if rows:
            conn.execute(attrs.insert(), list(rows.values()))


def ask_new_trial(study: optuna.Study, fixed_distributions: Dict[str, Any]) -> optuna.Trial:
    """``study.ask(fixed_distributions)`` for a caller that knows no trial is WAITING.

    Every ``ask()`` first scans the storage for WAITING trials, and the cached storage rereads
    every unfinished trial to do so: a batch of k asks reads O(k^2) rows (about half of a
    50-trial ask on SQLite). The engine checks the queue once per batch, under the study lock,
    and creates the rest as ``ask()`` does after finding no WAITING trial. Private:
    ``Study._thread_local.cached_all_trials`` (reset as ``ask()`` does, so the sampler sees the
    trials asked before this one) and ``Trial._suggest`` (what ``ask(fixed_distributions)``
    calls). Public alternative: ``study.ask(fixed_distributions)``.
    """
    study._thread_local.cached_all_trials = None
    trial = optuna.Trial(study, storage_of(study).create_new_trial(study_id(study)))
    for name, distribution in fixed_distributions.items():
        trial._suggest(name, distribution)
    return trial


def _user_attr_columns():
    from optuna.storages._rdb.models import TrialUserAttributeModel

    columns = {c.name for c in TrialUserAttributeModel.__table__.columns}
    if not {"trial_id", "key", "value_json"} <= columns:
        raise AttributeError(f"columns are now {sorted(columns)}")
    return columns


def optuna_canary_problems() -> List[str]:
    """What this Optuna release lacks of what the adapter relies on ([] when all is there)."""
    problems: List[str] = []
    checks = {
        "Trial._suggest": lambda: optuna.Trial._suggest,
        "RDBStorage._get_stale_trial_ids": lambda: optuna.storages.RDBStorage._get_stale_trial_ids,
        "storages._rdb.models.TrialHeartbeatModel": _heartbeat_table,
        "storages._rdb.models.TrialUserAttributeModel": _user_attr_columns,
        "_CachedStorage._backend": lambda: optuna.storages._CachedStorage(
            optuna.storages.RDBStorage("sqlite:///:memory:"))._backend,
    }
    for name, get in checks.items():
        try:
            get()
        except (AttributeError, ImportError) as e:
            problems.append(f"{name}: {e}")
    study = optuna.create_study()
    for attr in ("_study_id", "_thread_local", "_storage"):
        if not hasattr(study, attr):
            problems.append(f"Study.{attr} is gone")
    if not hasattr(getattr(study, "_thread_local", None), "cached_all_trials"):
        problems.append("Study._thread_local.cached_all_trials is gone")
    trial: Optional[optuna.Trial] = study.ask()
    if not hasattr(trial, "_trial_id"):
        problems.append("Trial._trial_id is gone")
    return problems


# ====================================================================================== MLflow
# MLflow's public API writes one run per request: creating a run, logging its params, its metrics
# and ending it are four transactions each (about 15 ms a trial on SQLite). On a SQL tracking
# store (the embedded SQLite, PostgreSQL) the engine writes each step for a whole batch of runs in
# one transaction, into the tables and with the values MLflow's own ``SqlAlchemyStore`` writes
# (``create_run``, ``log_batch``, ``update_run_info``). Private: ``MlflowClient._tracking_client``,
# the store's ``engine`` and the table models of ``mlflow.store.tracking.dbmodels.models``.
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_MAX_FLOAT = 1.7976931348623157e308
_RUN_COLUMNS = ("run_uuid", "name", "artifact_uri", "experiment_id", "source_type", "source_name", "entry_point_name",
                "user_id", "status", "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage")
MAX_KEY, MAX_VALUE = 250, 8000  # the tables' column sizes (MLflow's own client checks the same)


@dataclass
class NewRun:
    """A run to create: its name, tags and params (values already strings)."""

    name: str
    tags: Dict[str, str] = field(default_factory=dict)
    params: Dict[str, str] = field(default_factory=dict)


@dataclass
class RunRecord:
    """What one run gets in one write: metrics (any number) and tags (set or replaced)."""

    run_id: str
    metrics: Sequence[Metric] = ()
    tags: Dict[str, str] = field(default_factory=dict)


def sql_store(client):
    """The client's tracking store when it is MLflow's SQL store, else None (REST, files)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def _models():
    from mlflow.store.tracking.dbmodels import models

    return models


def create_runs(store, experiment_id: str, artifact_root: str, runs: Sequence[NewRun],
                start_time: int) -> List[Tuple[str, str]]:
    """Create ``runs`` RUNNING in one transaction; returns (run id, artifact URI) of each.

    As ``SqlAlchemyStore.create_run`` does: a uuid4 hex id, the artifact URI
    ``<experiment artifact location>/<run id>/artifacts``, the name also as the
    ``mlflow.runName`` tag, the user from the ``mlflow.user`` tag (else "unknown").
    """
    from mlflow.utils.uri import append_to_uri_path

    m = _models()
    made, run_rows, tag_rows, param_rows = [], [], [], []
    for run in runs:
        _check_sizes(run.name, {**run.tags, **run.params})
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(artifact_root, run_id, "artifacts")
        made.append((run_id, artifact_uri))
        run_rows.append(dict(zip(_RUN_COLUMNS, (
            run_id, run.name, artifact_uri, int(experiment_id), "UNKNOWN", "", "", run.tags.get(USER_TAG, "unknown"),
            "RUNNING", start_time, None, None, "", "active"))))
        tags = {**run.tags, RUN_NAME_TAG: run.name}
        tag_rows += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
        param_rows += [{"run_uuid": run_id, "key": k, "value": v} for k, v in run.params.items()]
    with store.engine.begin() as conn:
        conn.execute(m.SqlRun.__table__.insert(), run_rows)
        if tag_rows:
            conn.execute(m.SqlTag.__table__.insert(), tag_rows)
        if param_rows:
            conn.execute(m.SqlParam.__table__.insert(), param_rows)
    return made


def _check_sizes(name: str, values: Dict[str, str]) -> None:
    from mlflow.exceptions import MlflowException

    for key, value in values.items():
        if len(key) > MAX_KEY or len(value) > MAX_VALUE:
            raise MlflowException(f"run {name!r}: tag or param {key[:60]!r} is longer than MLflow stores "
                                  f"(keys <= {MAX_KEY}, values <= {MAX_VALUE} characters)",
                                  error_code="INVALID_PARAMETER_VALUE")


def _stored_value(value: float) -> Tuple[float, bool]:
    """(value, is_nan) as MLflow stores a metric: NaN as 0 with the flag, infinities clipped."""
    if math.isnan(value):
        return 0.0, True
    if math.isinf(value):
        return (_MAX_FLOAT if value > 0 else -_MAX_FLOAT), False
    return float(value), False


def log_records(store, records: Sequence[RunRecord]) -> None:
    """Every record's metrics and tags in one transaction, as ``log_batch`` writes them: the
    metric history (exact duplicates dropped), each key's latest value by (step, timestamp,
    value), and tags replacing tags of the same key."""
    import sqlalchemy as sa
    from mlflow.exceptions import MlflowException

    m = _models()
    metric_rows, latest, tag_rows = {}, {}, []
    for rec in records:
        for metric in rec.metrics:
            value, is_nan = _stored_value(metric.value)
            row = {"run_uuid": rec.run_id, "key": metric.key, "value": value, "timestamp": metric.timestamp,
                   "step": metric.step, "is_nan": is_nan}
            metric_rows[(rec.run_id, metric.key, metric.timestamp, metric.step, value, is_nan)] = row
            best = latest.get((rec.run_id, metric.key))
            if best is None or (row["step"], row["timestamp"], row["value"]) > (best["step"], best["timestamp"],
                                                                                best["value"]):
                latest[(rec.run_id, metric.key)] = row
        _check_sizes(rec.run_id, rec.tags)
        tag_rows += [{"run_uuid": rec.run_id, "key": k, "value": v} for k, v in rec.tags.items()]
    run_ids = sorted({rec.run_id for rec in records})
    latest_t, tags_t = m.SqlLatestMetric.__table__, m.SqlTag.__table__
    runs_t = m.SqlRun.__table__
    with store.engine.begin() as conn:
        active = set(conn.execute(sa.select(runs_t.c.run_uuid).where(
            runs_t.c.run_uuid.in_(run_ids), runs_t.c.lifecycle_stage == "active")).scalars())
        if len(active) < len(run_ids):
            raise MlflowException(f"runs {sorted(set(run_ids) - active)} do not exist or are deleted",
                                  error_code="RESOURCE_DOES_NOT_EXIST")
        if metric_rows:
            conn.execute(m.SqlMetric.__table__.insert(), list(metric_rows.values()))
            _merge_latest(conn, latest_t, run_ids, latest)
        if tag_rows:
            unique = {(r["run_uuid"], r["key"]): r for r in tag_rows}
            for run_id in run_ids:
                keys = [k for r, k in unique if r == run_id]
                if keys:
                    conn.execute(tags_t.delete().where(tags_t.c.run_uuid == run_id, tags_t.c.key.in_(keys)))
            conn.execute(tags_t.insert(), list(unique.values()))


def _merge_latest(conn, latest_t, run_ids: List[str], latest: Dict[Tuple[str, str], dict]) -> None:
    """Insert or raise each (run, key)'s latest metric row, keeping a stored one that is newer."""
    import sqlalchemy as sa

    def order(row):
        return row["step"], row["timestamp"], row["value"]

    stored = {(r["run_uuid"], r["key"]): r for r in
              conn.execute(sa.select(latest_t).where(latest_t.c.run_uuid.in_(run_ids))).mappings()}
    inserts = []
    for key, row in latest.items():
        old = stored.get(key)
        if old is None:
            inserts.append(row)
        elif order(row) > order(old):
            conn.execute(latest_t.update().where(latest_t.c.run_uuid == key[0], latest_t.c.key == key[1])
                         .values(value=row["value"], timestamp=row["timestamp"], step=row["step"],
                                 is_nan=row["is_nan"]))
    if inserts:
        conn.execute(latest_t.insert(), inserts)


def end_runs(store, statuses: Dict[str, str], end_time: int) -> None:
    """Set each run's status ("FINISHED", "KILLED", "FAILED") and end time, in one transaction."""
    runs_t = _models().SqlRun.__table__
    by_status: Dict[str, List[str]] = {}
    for run_id, status in statuses.items():
        by_status.setdefault(status, []).append(run_id)
    with store.engine.begin() as conn:
        for status, ids in by_status.items():
            conn.execute(runs_t.update().where(runs_t.c.run_uuid.in_(ids)).values(status=status, end_time=end_time))


def mlflow_canary_problems() -> List[str]:
    """What this MLflow release lacks of what the adapter relies on ([] when all is there)."""
    problems: List[str] = []
    key_value, metric = {"run_uuid", "key", "value"}, {"run_uuid", "key", "value", "timestamp", "step", "is_nan"}
    expected = {"SqlRun": set(_RUN_COLUMNS), "SqlTag": key_value, "SqlParam": key_value, "SqlMetric": metric,
                "SqlLatestMetric": metric}
    try:
        m = _models()
    except ImportError as e:
        return [f"mlflow.store.tracking.dbmodels.models: {e}"]
    for name, columns in expected.items():
        model: Optional[type] = getattr(m, name, None)
        if model is None:
            problems.append(f"dbmodels.models.{name} is gone")
            continue
        have = {c.name for c in model.__table__.columns}
        if have != columns:
            problems.append(f"{name} columns changed: {sorted(have ^ columns)}")
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401
        from mlflow.tracking import MlflowClient

        if not hasattr(MlflowClient("sqlite:///:memory:"), "_tracking_client"):
            problems.append("MlflowClient._tracking_client is gone")
    except ImportError as e:
        problems.append(f"SqlAlchemyStore: {e}")
    return problems
