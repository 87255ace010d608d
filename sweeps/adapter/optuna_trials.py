"""A batch of new Optuna trials written in one transaction, and the trials handed back bound to
the real study (see ``sweeps/staged_asks.py``, which asks them in memory first)."""
from __future__ import annotations

import copy
import datetime
import json
from typing import Any, Dict, List, Sequence

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from .private_names import optuna_tables, rdb_backend, rebind_trial, storage_of, study_id, with_identity


def insert_trials(study: optuna.Study, trials: Sequence[FrozenTrial], study_system_attrs: Dict[str, Any]
                  ) -> List[FrozenTrial]:
    """Create ``trials`` (RUNNING, with their params and attributes) in ``study``, and set the
    study's system attributes, in one transaction; returns them with their storage ids and numbers.

    Private: Optuna's tables (:func:`optuna_tables`), rows as ``RDBStorage`` writes them
    (numbers counted in the study under the study row's lock; UTC datetimes; params in internal
    representation with their distribution as JSON; attributes as JSON). Public alternative, used
    for other storages: ``storage.create_new_trial(study_id, template_trial)`` per trial.
    """
    backend = rdb_backend(storage_of(study))
    if backend is None:
        return _insert_trials_one_by_one(study, trials, study_system_attrs)
    if not trials:
        return []
    import sqlalchemy as sa

    models = optuna_tables()
    sid = study_id(study)
    table = models.TrialModel.__table__
    with backend.engine.begin() as conn:
        lock = sa.select(models.StudyModel.__table__.c.study_id).where(models.StudyModel.__table__.c.study_id == sid)
        if conn.execute(lock.with_for_update() if conn.dialect.name == "postgresql" else lock).first() is None:
            raise KeyError(f"no study with id {sid}")
        ids = list(conn.execute(table.insert().returning(table.c.trial_id, sort_by_parameter_order=True), [
            {"number": None, "study_id": sid, "state": TrialState.RUNNING, "datetime_start": _utc(t.datetime_start),
             "datetime_complete": None} for t in trials]).scalars())
        # The study row (PostgreSQL) or the database (SQLite) is locked: no trial of this study
        # lands between these, so each one's number is the count of the study's trials before it.
        before = conn.execute(sa.select(sa.func.count()).select_from(table).where(
            table.c.study_id == sid, table.c.trial_id < min(ids))).scalar()
        conn.execute(table.update().where(table.c.trial_id == sa.bindparam("tid")).values(number=sa.bindparam("num")),
                     [{"tid": tid, "num": before + i} for i, tid in enumerate(ids)])
        _insert_rows(conn, models, trials, ids)
        _set_study_attrs(conn, models.StudySystemAttributeModel.__table__, sid, study_system_attrs)
    return [_with_identity(t, tid, before + i) for i, (t, tid) in enumerate(zip(trials, ids))]


def _insert_rows(conn, models, trials: Sequence[FrozenTrial], ids: Sequence[int]) -> None:
    params = [{"trial_id": tid, "param_name": name, "param_value": t.distributions[name].to_internal_repr(value),
               "distribution_json": distribution_to_json(t.distributions[name])}
              for t, tid in zip(trials, ids) for name, value in t.params.items()]
    for model, rows in ((models.TrialParamModel, params),
                        (models.TrialSystemAttributeModel, _attr_rows(trials, ids, "system_attrs")),
                        (models.TrialUserAttributeModel, _attr_rows(trials, ids, "user_attrs"))):
        if rows:
            conn.execute(model.__table__.insert(), rows)


def _attr_rows(trials: Sequence[FrozenTrial], ids: Sequence[int], which: str) -> List[dict]:
    return [{"trial_id": tid, "key": key, "value_json": json.dumps(value)}
            for t, tid in zip(trials, ids) for key, value in getattr(t, which).items()]


def _set_study_attrs(conn, table, sid: int, attrs: Dict[str, Any]) -> None:
    for key, value in attrs.items():
        conn.execute(table.delete().where(table.c.study_id == sid, table.c.key == key))
    if attrs:
        conn.execute(table.insert(), [{"study_id": sid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])


def _utc(local: datetime.datetime) -> datetime.datetime:
    """Naive local time -> naive UTC, as ``TrialModel.datetime_start`` stores it."""
    return local.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def copy_trial(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose dicts (params, distributions, attributes) are its own; values are shared
    (a deep copy of a grid trial, its search space attribute included, cost more than its ask)."""
    out = copy.copy(trial)
    out.params, out.distributions = dict(trial.params), dict(trial.distributions)
    out.user_attrs, out.system_attrs = dict(trial.user_attrs), dict(trial.system_attrs)
    out.intermediate_values = dict(trial.intermediate_values)
    return out


def _with_identity(trial: FrozenTrial, tid: int, number: int) -> FrozenTrial:
    return with_identity(copy_trial(trial), tid, number)


def _insert_trials_one_by_one(study: optuna.Study, trials: Sequence[FrozenTrial],
                             study_system_attrs: Dict[str, Any]) -> List[FrozenTrial]:
    """What :func:`insert_trials` writes, through the storage's public calls (one transaction each)."""
    storage, sid = storage_of(study), study_id(study)
    out = []
    for t in trials:
        tid = storage.create_new_trial(sid, template_trial=t)
        out.append(_with_identity(t, tid, storage.get_trial(tid).number))
    for key, value in study_system_attrs.items():
        storage.set_study_system_attr(sid, key, value)
    return out


def bind_trial(study: optuna.Study, trial: optuna.Trial, written: FrozenTrial) -> optuna.Trial:
    """``trial`` (asked on a staged copy of ``study``) as a trial of ``study`` itself, without
    asking it again: a second ``Trial(study, id)`` would run the sampler's ``before_trial`` twice."""
    return rebind_trial(trial, study, written)


def trials_canary_problems() -> List[str]:
    """What this Optuna release changed of the tables :func:`insert_trials` writes (the private
    names it and :func:`bind_trial` use: ``optuna_canary_problems``)."""
    problems: List[str] = []
    models = optuna_tables()
    tables = {"TrialModel": {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"},
              "TrialParamModel": {"trial_id", "param_name", "param_value", "distribution_json"},
              "TrialSystemAttributeModel": {"trial_id", "key", "value_json"},
              "TrialUserAttributeModel": {"trial_id", "key", "value_json"},
              "StudySystemAttributeModel": {"study_id", "key", "value_json"}}
    for name, columns in tables.items():
        have = {c.key for c in getattr(models, name).__table__.columns}
        if not columns <= have:
            problems.append(f"{name} lacks columns {sorted(columns - have)}")
    return problems
