"""The tells of a batch of trials in one transaction (what ``study.tell`` writes, per trial)."""
from __future__ import annotations

import datetime
import math
from typing import Dict, Optional, Sequence, Tuple

import optuna
from optuna.trial import TrialState

from .optuna_trials import _utc
from .private_names import optuna_tables, rdb_backend, storage_of, trial_id

Tell = Tuple[optuna.Trial, TrialState, Optional[float]]  # (trial, COMPLETE or FAIL, its value or None)


def tell_trials(study: optuna.Study, tells: Sequence[Tell]) -> Dict[int, Exception]:
    """``study.tell(trial, value)`` (COMPLETE, a finite value) or ``study.tell(trial,
    state=FAIL)`` for each of ``tells``; returns the error of each trial id that could not be
    told (it is no longer RUNNING: another worker failed it as stale, say), the others are told.

    As ``study.tell`` does: the sampler's ``after_trial`` hears each trial first, then the state,
    completion time and value are written. Private: Optuna's trial and trial-value tables
    (:func:`optuna_tables`; values in their stored representation, UTC times); the trials
    are read in one query (``study.get_trials``) instead of one each. Other storages, PRUNED
    trials and values that are not finite go through ``study.tell`` itself.
    """
    backend = rdb_backend(storage_of(study))
    in_bulk = [backend is not None and (state == TrialState.FAIL or (state == TrialState.COMPLETE and _finite(value)))
               for _, state, value in tells]
    fast = [t for t, bulk in zip(tells, in_bulk) if bulk]
    errors = _tell_one_by_one(study, [t for t, bulk in zip(tells, in_bulk) if not bulk])
    if backend is None or not fast:
        return errors
    running = {trial_id(t): t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial, state, value in fast:
        frozen = running.get(trial_id(trial))
        if frozen is None:
            errors[trial_id(trial)] = _not_running(trial)
            continue
        try:
            study.sampler.after_trial(study, frozen, state, None if value is None else [float(value)])
        except Exception as e:  # noqa: BLE001 -- told all the same, as study.tell does
            errors[trial_id(trial)] = e
    written = _write(backend, [t for t in fast if trial_id(t[0]) in running])
    for trial, _, _ in fast:
        if trial_id(trial) in running and trial_id(trial) not in written:
            errors.setdefault(trial_id(trial), _not_running(trial))
    return errors


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(float(value))


def _not_running(trial) -> Exception:
    return optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} is no longer RUNNING: not told")


def _tell_one_by_one(study: optuna.Study, tells: Sequence[Tell]) -> Dict[int, Exception]:
    errors: Dict[int, Exception] = {}
    for trial, state, value in tells:
        try:
            if state == TrialState.COMPLETE:
                study.tell(trial, value)
            else:
                study.tell(trial, state=state)
        except Exception as e:  # noqa: BLE001 -- the caller handles each trial's failure
            errors[trial_id(trial)] = e
    return errors


def _write(backend: optuna.storages.RDBStorage, tells: Sequence[Tell]) -> set:
    """The states and values of those of ``tells`` still RUNNING, in one transaction; their ids."""
    import sqlalchemy as sa

    models = optuna_tables()
    trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
    ids = [trial_id(t) for t, _, _ in tells]
    if not ids:
        return set()
    now = _utc(datetime.datetime.now())
    with backend.engine.begin() as conn:
        query = sa.select(trials.c.trial_id).where(trials.c.trial_id.in_(ids), trials.c.state == TrialState.RUNNING)
        running = set(conn.execute(query.with_for_update() if conn.dialect.name == "postgresql" else query).scalars())
        rows = []
        for trial, state, value in tells:
            if trial_id(trial) in running and value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(float(value))
                rows.append({"trial_id": trial_id(trial), "objective": 0, "value": stored, "value_type": kind})
        if rows:
            conn.execute(values.insert(), rows)
        for state in {s for _, s, _ in tells}:
            group = [trial_id(t) for t, s, _ in tells if s == state and trial_id(t) in running]
            if group:
                conn.execute(trials.update().where(trials.c.trial_id.in_(group)).values(state=state,
                                                                                        datetime_complete=now))
    return running
