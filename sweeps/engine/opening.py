"""Open a cell's study: pick it by the cell's objective (identity.py), create or reopen its
MLflow parent run, and name the objective in Optuna (optuna-dashboard shows ``val_acc``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import optuna

from ..storage import study_lock
from ..study import make_pruner, make_sampler
from ..tracking import TAG_OVERRIDES, TAG_ROLE, TAG_STORAGE, TAG_STUDY, Tracker, redact_url
from .cells import Cell
from .identity import ATTR_OBJECTIVE, Objective, alternative_name, default_study_name
from .options import SweeperOptions, SweepError

log = logging.getLogger(__name__)

ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_EXPERIMENT = "mlflow_experiment_id"


@dataclass
class OpenedStudy:
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    tracker: Tracker
    parent_id: str


def _existing(storage, name: str) -> Optional[optuna.Study]:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _conflicts(study: optuna.Study, objective: Objective, tracker: Tracker) -> List[str]:
    """How this launch's objective differs from the study's ([]: the same study)."""
    stored = study.user_attrs.get(ATTR_OBJECTIVE)
    if stored is not None:
        return objective.differences(stored)
    parent_id = study.user_attrs.get(ATTR_PARENT_RUN)  # made by an older version: its parent's params
    if parent_id is None:
        return []
    try:
        params = tracker.get_run(parent_id).data.params
    except Exception:  # noqa: BLE001 -- the parent's absence is reported when it is reopened
        return []
    return objective.matches_legacy(params)


def choose_study_name(storage, cell: Cell, options: SweeperOptions, objective: Objective, tracker: Tracker) -> str:
    """The study this cell joins (see identity.py); refuses an explicit name of another objective."""
    name = default_study_name(cell.base.tracking.experiment, options.study_name, cell.overrides)
    with study_lock(storage, name):
        found = _existing(storage, name)
        diffs = _conflicts(found, objective, tracker) if found is not None else []
    if not diffs:
        return name
    if options.study_name is not None:
        raise SweepError(f"hydra.sweeper.study_name={options.study_name!r}: study {name!r} optimizes another "
                         f"objective ({'; '.join(diffs[:4])}); use the same config as its other workers, or "
                         f"another study_name")
    other = alternative_name(name, objective)
    log.warning("study %s optimizes another objective (%s): this launch uses study %s", name,
                "; ".join(diffs[:4]), other)
    return other


def open_study(storage, cell: Cell, options: SweeperOptions, tracker: Tracker, seed: int,
               n_trials: int) -> OpenedStudy:
    objective = Objective.of(cell.base, cell.plan.search_space, options.sampler, options.direction,
                             cell.plan.conditions)
    name = choose_study_name(storage, cell, options, objective, tracker)
    study = optuna.create_study(
        study_name=name, storage=storage, direction=options.direction, load_if_exists=True,
        sampler=make_sampler(options.sampler, seed, cell.plan.search_space, options.sampler_kwargs),
        pruner=make_pruner(options.pruner, options.pruner_kwargs))
    with study_lock(storage, name):
        if ATTR_OBJECTIVE not in study.user_attrs:
            study.set_user_attr(ATTR_OBJECTIVE, objective.values)
        if study.metric_names is None:
            study.set_metric_names(["val_acc"])
        parent_id = study.user_attrs.get(ATTR_PARENT_RUN)
        if parent_id is None:
            tags, params = parent_run_tags(name, options, cell, n_trials)
            parent_id = tracker.create_run(f"{cell.base.loss.name} · {name}", tags=tags, params=params)
            study.set_user_attr(ATTR_PARENT_RUN, parent_id)
            study.set_user_attr(ATTR_EXPERIMENT, tracker.experiment_id)
        else:
            reopen_parent(study, tracker, parent_id, options.storage)
    return OpenedStudy(study, storage, tracker, parent_id)


def parent_run_tags(study_name: str, options: SweeperOptions, cell: Cell, n_trials: int):
    """Tags and params of a study's parent run (``hydra.overrides``, the search space, ...)."""
    import yaml

    tags: Dict[str, object] = {
        TAG_ROLE: "study", TAG_STUDY: study_name, TAG_STORAGE: redact_url(options.storage),
        TAG_OVERRIDES: cell.overrides_tag, "sampler": options.sampler, "pruner": options.pruner,
        "n_trials": n_trials, "search_space": yaml.safe_dump(
            {k: str(v) for k, v in cell.plan.search_space.items()}, default_flow_style=True).strip()}
    base = cell.base
    params = {"loss": base.loss.name, "dataset": base.dataset.name, "num_iters": base.model.num_iters,
              "batch_size": base.model.batch_size, "n_trials": n_trials, "sampler": options.sampler}
    return tags, params


def reopen_parent(study: optuna.Study, tracker: Tracker, parent_id: str, storage_url: Optional[str]) -> None:
    """Reopen the study's MLflow parent run; a clear error if the tracking store lacks it."""
    found = tracker.reopen_run(parent_id)
    if found == "reopened":
        return
    where = (f"study {study.study_name!r} in the Optuna storage {redact_url(storage_url)} records its trials in "
             f"MLflow run {parent_id}")
    if found == "deleted":
        raise SweepError(f"{where}, which is deleted in the tracking store {redact_url(tracker.uri)}: restore it "
                         f"(mlflow runs restore --run-id {parent_id}), or start a new study: "
                         f"hydra.sweeper.study_name=<new name>")
    raise SweepError(
        f"{where}, which the tracking store {redact_url(tracker.uri)} does not have: the two stores are out of "
        f"sync (was the MLflow store deleted, or MLFLOW_TRACKING_URI / tracking.uri changed?). Point "
        f"tracking.uri at the store this study started with, or start a new study: "
        f"hydra.sweeper.study_name=<new name>, or delete this one from the Optuna storage.")
