"""A batch of new trials asked in memory, then written to the study at once.

Optuna's ``study.ask`` writes as it goes: one transaction to create the trial, one read to load
it, one transaction per param (about 12 ms a trial on SQLite). The engine asks a batch under the
study lock, so no other worker adds trials meanwhile. :class:`StagedStorage` lets Optuna's own
``ask()`` and sampler run unchanged against a view of the study: the trials read once at the
start of the batch plus those asked so far, whose writes (params, system attributes, the study
attributes a sampler keeps) stay in memory. :func:`ask_staged` then writes the batch in one
transaction (``adapter.insert_trials``) and hands back trials bound to the real study.
"""
from __future__ import annotations

import copy
import datetime
from typing import Any, Callable, Container, Dict, List, Optional, Sequence

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from . import adapter


class StagedStorage(BaseStorage):
    """One study's trials as read at the start of a batch, plus the batch's new trials.

    Reads of existing trials come from that snapshot (WAITING ones hidden: the engine pops
    re-queued trials through ``study.ask`` before a staged batch); writes to new trials and to
    the study's system attributes are kept here until :meth:`staged_trials` is written. Any
    other call goes to the real storage.
    """

    def __init__(self, backend: BaseStorage, study_id: int, existing: Sequence[FrozenTrial]):
        self._backend, self._own_study = backend, study_id
        self._existing = [t for t in existing if t.state != TrialState.WAITING]
        self._first_number = len(existing)
        self._staged: Dict[int, FrozenTrial] = {}  # provisional (negative) trial id -> trial
        self._existing_in: Dict[tuple, List[FrozenTrial]] = {}  # states -> those of the snapshot
        self._stored_study_attrs: Optional[Dict[str, Any]] = None  # read once per batch
        self.study_system_attrs: Dict[str, Any] = {}
        self._distributions: Dict[str, BaseDistribution] = {}
        self._compatible: List[BaseDistribution] = []  # checked against the study's already
        for t in existing:
            for name, dist in t.distributions.items():
                self._distributions.setdefault(name, dist)

    def staged_trials(self) -> List[FrozenTrial]:
        return list(self._staged.values())

    def _own(self, trial_id: int) -> FrozenTrial:
        if trial_id not in self._staged:
            raise RuntimeError(f"a staged batch may only change its own new trials, not trial id {trial_id}")
        return self._staged[trial_id]

    # ---------------------------------------------------------------- the batch's own writes
    def create_new_trial(self, study_id: int, template_trial: Optional[FrozenTrial] = None) -> int:
        if study_id != self._own_study or template_trial is not None:
            raise RuntimeError("a staged batch creates plain new trials of its own study only")
        trial_id = -1 - len(self._staged)
        self._staged[trial_id] = FrozenTrial(
            number=self._first_number + len(self._staged), state=TrialState.RUNNING, value=None, values=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=trial_id)
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        trial = self._own(trial_id)
        previous = self._distributions.get(param_name)
        if previous is not None and not any(distribution is d for d in self._compatible):
            check_distribution_compatibility(previous, distribution)
            self._compatible.append(distribution)  # a search space passes the same objects on every ask
        self._distributions.setdefault(param_name, distribution)
        trial.distributions = {**trial.distributions, param_name: distribution}
        trial.params = {**trial.params, param_name: distribution.to_external_repr(param_value_internal)}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._own(trial_id)
        trial.system_attrs = {**trial.system_attrs, key: value}

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._own(trial_id)
        trial.user_attrs = {**trial.user_attrs, key: value}

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if study_id != self._own_study:
            raise RuntimeError("a staged batch writes its own study only")
        self.study_system_attrs[key] = value

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Optional[Sequence[float]] = None) -> bool:
        raise RuntimeError("a staged batch asks trials; it does not finish them")

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        raise RuntimeError("a staged batch asks trials; it does not report on them")

    # ---------------------------------------------------------------- reads: snapshot + batch
    def get_trial(self, trial_id: int) -> FrozenTrial:
        if trial_id in self._staged:
            return adapter.copy_trial(self._staged[trial_id])
        return self._backend.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Optional[Container[TrialState]] = None) -> List[FrozenTrial]:
        if study_id != self._own_study:
            return self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if states is None:
            trials = self._existing + list(self._staged.values())
        else:  # samplers ask for the same states on every ask: filter the snapshot once
            key = tuple(states)
            if key not in self._existing_in:
                self._existing_in[key] = [t for t in self._existing if t.state in states]
            trials = self._existing_in[key] + [t for t in self._staged.values() if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_study_system_attrs(self, study_id: int) -> Dict[str, Any]:
        if study_id != self._own_study:
            return self._backend.get_study_system_attrs(study_id)
        if self._stored_study_attrs is None:  # under the study lock, only this batch changes them
            self._stored_study_attrs = self._backend.get_study_system_attrs(study_id)
        return {**self._stored_study_attrs, **self.study_system_attrs}

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        for trial_id, t in self._staged.items():
            if study_id == self._own_study and t.number == trial_number:
                return trial_id
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    # ---------------------------------------------------------------- the rest: the real storage
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: Optional[str] = None) -> int:
        return self._backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> List[StudyDirection]:
        return self._backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> Dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_all_studies(self):
        return self._backend.get_all_studies()


def ask_staged(study: optuna.Study, existing: Sequence[FrozenTrial], k: int,
               ask_one: Callable[[optuna.Study, int], optuna.Trial]) -> List[optuna.Trial]:
    """``k`` new trials of ``study``, asked as ``ask_one(staged_study, number)`` asks each (it
    may set the staged study's sampler, then calls ``ask()`` and suggests), written in one
    transaction. ``existing``: the study's trials now (the caller holds the study lock).
    Nothing is written if an ask fails."""
    staged_storage = StagedStorage(adapter.storage_of(study), adapter.study_id(study), existing)
    staged = optuna.Study(study.study_name, staged_storage, sampler=study.sampler, pruner=study.pruner)
    trials = [ask_one(staged, len(existing) + i) for i in range(k)]
    study.sampler = staged.sampler  # a sampler set per trial (reseeded) hears the tells as before
    written = adapter.insert_trials(study, staged_storage.staged_trials(), staged_storage.study_system_attrs)
    return [adapter.bind_trial(study, trial, frozen) for trial, frozen in zip(trials, written)]
