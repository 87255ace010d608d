"""Optuna's internals the engine relies on (see the package docstring)."""
from __future__ import annotations

import datetime
import logging
from typing import Any, List, Optional, Sequence, Tuple

import optuna
from optuna.trial import TrialState

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
    for attr in ("_study_id", "_storage"):
        if not hasattr(study, attr):
            problems.append(f"Study.{attr} is gone")
    trial: Optional[optuna.Trial] = study.ask()
    if not hasattr(trial, "_trial_id"):
        problems.append("Trial._trial_id is gone")
    return problems


