"""MLflow's run tables, written in bulk (see the package docstring)."""
from __future__ import annotations

import contextlib
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from .private_names import mlflow_private_name_problems, mlflow_tables

if TYPE_CHECKING:  # importing MLflow takes seconds: a launch reopens its parent run without it
    from mlflow.entities import Metric

# # MLflow's public API writes one run per request: creating a run, logging its params, its metrics
# and ending it are four transactions each (about 15 ms a trial on SQLite). On a SQL tracking
# store (the embedded SQLite, PostgreSQL) the engine writes each step for a whole batch of runs in
# one transaction, into the tables and with the values MLflow's own ``SqlAlchemyStore`` writes
# (``create_run``, ``log_batch``, ``update_run_info``). Private: the store itself
# (``private_names.sql_store``), its ``engine`` and MLflow's table models (``mlflow_tables``).
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_MAX_FLOAT = 1.7976931348623157e308
_RUN_COLUMNS = ("run_uuid", "name", "artifact_uri", "experiment_id", "source_type", "source_name", "entry_point_name",
                "user_id", "status", "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage")
_RUNS_TABLE = "runs"  # SqlRun's table: reopen_run writes it without importing MLflow
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


def create_runs(store, experiment_id: str, artifact_root: str, runs: Sequence[NewRun],
                start_time: int) -> List[Tuple[str, str]]:
    """Create ``runs`` RUNNING in one transaction; returns (run id, artifact URI) of each.

    As ``SqlAlchemyStore.create_run`` does: a uuid4 hex id, the artifact URI
    ``<experiment artifact location>/<run id>/artifacts``, the name also as the
    ``mlflow.runName`` tag, the user from the ``mlflow.user`` tag (else "unknown").
    """
    from mlflow.utils.uri import append_to_uri_path

    m = mlflow_tables()
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

    m = mlflow_tables()
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
    runs_t = mlflow_tables().SqlRun.__table__
    by_status: Dict[str, List[str]] = {}
    for run_id, status in statuses.items():
        by_status.setdefault(status, []).append(run_id)
    with store.engine.begin() as conn:
        for status, ids in by_status.items():
            conn.execute(runs_t.update().where(runs_t.c.run_uuid.in_(ids)).values(status=status, end_time=end_time))


def reopen_run(db_url: str, run_id: str) -> str:
    """Set a run RUNNING again, straight in the tracking database (``update_run(status=RUNNING)``
    without importing MLflow: a relaunch trains before MLflow has loaded). Returns "reopened",
    "missing" (no such run, or no such database) or "deleted" (the run is in the trash).
    ``db_url``: a SQLAlchemy URL with its driver (``db_urls.tracking_uri``)."""
    import sqlalchemy as sa

    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).is_file():
        return "missing"  # connecting would create an empty database file
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(_RUNS_TABLE):
                return "missing"
            found = conn.execute(sa.text(f"SELECT lifecycle_stage FROM {_RUNS_TABLE} WHERE run_uuid = :id"),
                                 {"id": run_id}).first()
            if found is None:
                return "missing"
            if found[0] != "active":
                return "deleted"
            conn.execute(sa.text(f"UPDATE {_RUNS_TABLE} SET status = 'RUNNING' WHERE run_uuid = :id"), {"id": run_id})
            return "reopened"
    finally:
        engine.dispose()


def make_store_template(db_file: Path) -> bool:
    """Make ``db_file`` (a copy of a SQLite store MLflow has just migrated) an empty template: its
    only row of ``experiments``, the Default experiment, is deleted, so MLflow creates it anew
    (with the opening store's artifact root) when it opens a copy. False, leaving the file as it
    is, if the store holds anything else (another process wrote to it meanwhile). Relies on
    MLflow creating a missing Default experiment when it opens a store (``SqlAlchemyStore``)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_file)) as conn, conn:
        experiments = conn.execute("SELECT experiment_id FROM experiments").fetchall()
        runs = conn.execute(f"SELECT COUNT(*) FROM {_RUNS_TABLE}").fetchone()[0]
        if experiments != [(0,)] or runs:
            return False
        conn.execute("DELETE FROM experiments")
    return True


def mlflow_canary_problems() -> List[str]:
    """What this MLflow release lacks of what the adapter relies on ([] when all is there)."""
    key_value, metric = {"run_uuid", "key", "value"}, {"run_uuid", "key", "value", "timestamp", "step", "is_nan"}
    expected = {"SqlRun": set(_RUN_COLUMNS), "SqlTag": key_value, "SqlParam": key_value, "SqlMetric": metric,
                "SqlLatestMetric": metric}
    problems = mlflow_private_name_problems()
    if problems:
        return problems
    m = mlflow_tables()
    if getattr(getattr(m, "SqlRun", None), "__tablename__", _RUNS_TABLE) != _RUNS_TABLE:
        problems.append(f"SqlRun's table is no longer {_RUNS_TABLE!r}")
    for name, columns in expected.items():
        model: Optional[type] = getattr(m, name, None)
        if model is None:
            problems.append(f"dbmodels.models.{name} is gone")
            continue
        have = {c.name for c in model.__table__.columns}
        if have != columns:
            problems.append(f"{name} columns changed: {sorted(have ^ columns)}")
    return problems
