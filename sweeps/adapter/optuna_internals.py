"""Optuna's heartbeat and user-attribute tables, written in bulk (see the package docstring)."""
from __future__ import annotations

import datetime
import logging
from typing import Any, List, Sequence, Tuple

import optuna
from optuna.trial import TrialState

from .private_names import optuna_private_name_problems, optuna_tables, optunas_stale_trial_ids, rdb_backend, \
    storage_of, trial_id

log = logging.getLogger(__name__)

def stale_trial_ids(storage: optuna.storages.RDBStorage, study: optuna.Study, grace_period: float) -> List[int]:
    """RUNNING trials whose worker is gone: no heartbeat within ``grace_period`` seconds.

    Optuna's own stale check (:func:`optunas_stale_trial_ids`), which only sees trials that have a heartbeat row; a trial asked by
    a process that died before its first beat (or by an older linear-sweeps that never beat)
    has none, so those count as stale once they are ``grace_period`` old.
    """
    stale = set(optunas_stale_trial_ids(storage, study))
    with_beat = _trials_with_heartbeat(storage, study)
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start
        if trial_id(t) not in with_beat and started is not None and started.replace(tzinfo=None) < cutoff:
            stale.add(trial_id(t))
    return sorted(stale)


def _heartbeat_table():
    """Optuna's heartbeat table (``TrialHeartbeatModel``)."""
    return optuna_tables().TrialHeartbeatModel.__table__


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


def set_user_attrs(study: optuna.Study, items: Sequence[Tuple[int, str, Any]]) -> None:
    """``storage.set_trial_user_attr`` for many (trial id, key, value) in one transaction.

    Only RUNNING trials are written (Optuna refuses to change a finished trial; the engine's
    callers write links of trials they just asked). Private: the user-attribute and trial
    tables, values stored as JSON as Optuna stores them. Public alternative:
    ``set_trial_user_attr`` per item, one transaction each.
    """
    import json

    import sqlalchemy as sa

    backend = rdb_backend(storage_of(study))
    if backend is None:
        for tid, key, value in items:
            storage_of(study).set_trial_user_attr(tid, key, value)
        return
    if not items:
        return
    attrs, trials = optuna_tables().TrialUserAttributeModel.__table__, optuna_tables().TrialModel.__table__
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
    columns = {c.name for c in optuna_tables().TrialUserAttributeModel.__table__.columns}
    if not {"trial_id", "key", "value_json"} <= columns:
        raise AttributeError(f"columns are now {sorted(columns)}")
    return columns


def optuna_canary_problems() -> List[str]:
    """What this Optuna release lacks of what the adapter relies on ([] when all is there)."""
    problems = optuna_private_name_problems()
    for name, get in {"TrialHeartbeatModel": _heartbeat_table, "TrialUserAttributeModel": _user_attr_columns}.items():
        try:
            get()
        except (AttributeError, ImportError) as e:
            problems.append(f"{name}: {e}")
    return problems
