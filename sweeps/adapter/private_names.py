"""Every private name of Optuna and MLflow the engine touches, each behind one accessor.

The rest of the adapter (heartbeats, bulk asks, tells and runs) writes the libraries' tables
with plain SQLAlchemy; it reaches the tables, the storage ids and the stores only through the
functions here. :func:`private_name_problems` checks each of them on the installed releases.
"""
from __future__ import annotations

from typing import List, Optional

import optuna

# What ``optuna.Trial.__init__`` sets; rebind_trial moves a staged trial by rewriting these.
TRIAL_ATTRIBUTES = {"study", "_trial_id", "storage", "_cached_frozen_trial", "relative_search_space",
                    "_relative_params", "_fixed_params"}
# What optuna_tpe.BatchTPESampler overrides or reads of the TPESampler it extends.
TPE_SAMPLER_ATTRIBUTES = ("_sample", "_get_params", "_get_internal_repr", "_compute_acquisition_func", "_compare",
                          "_parzen_estimator_cls", "_parzen_estimator_parameters", "_gamma", "_rng",
                          "_n_ei_candidates", "_constant_liar", "_group")


# ----------------------------------------------------------------------------- Optuna
def trial_id(trial) -> int:
    """The storage id of a trial (``optuna.Trial`` or ``FrozenTrial``). Private: ``_trial_id``.
    Public alternative: none (``number`` is per study; storage calls and heartbeats use the id)."""
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


def rdb_backend(storage) -> Optional[optuna.storages.RDBStorage]:
    """The RDB storage under Optuna's caching wrapper (private: ``_CachedStorage._backend``),
    or None for other storages."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def optuna_tables():
    """Optuna's table models (private: ``optuna.storages._rdb.models``)."""
    from optuna.storages._rdb import models

    return models


def optunas_stale_trial_ids(storage: optuna.storages.RDBStorage, study: optuna.Study) -> List[int]:
    """RUNNING trials whose heartbeat is older than the storage's grace period. Private:
    ``RDBStorage._get_stale_trial_ids``; the public ``optuna.storages.fail_stale_trials`` fails
    them too, before the engine could write each one's reason and MLflow link."""
    return list(storage._get_stale_trial_ids(study_id(study)))


def with_identity(trial, tid: int, number: int):
    """``trial`` (a FrozenTrial the caller owns) given the storage id and number it was written with."""
    trial._trial_id, trial.number = tid, number
    return trial


def rebind_trial(trial: optuna.Trial, study: optuna.Study, written) -> optuna.Trial:
    """``trial`` (asked on a staged copy of ``study``) as the trial ``written`` of ``study`` itself.
    Private: the attributes ``optuna.Trial.__init__`` sets (TRIAL_ATTRIBUTES)."""
    trial.study, trial.storage, trial._trial_id = study, storage_of(study), written._trial_id
    with_identity(trial._cached_frozen_trial, written._trial_id, written.number)
    return trial


def tpe_module():
    """Optuna's TPE sampler module (private: ``optuna.samplers._tpe.sampler``)."""
    from optuna.samplers._tpe import sampler

    return sampler


def tpe_split_trials(study: optuna.Study, trials, n_below: int):
    """(good, rest) of ``trials`` as TPESampler splits them, each by number (private:
    ``_split_trials``; optuna_tpe.BatchTPESampler splits the finished trials once per batch)."""
    return tpe_module()._split_trials(study, trials, n_below)


def tpe_default_gamma(n_finished: int) -> int:
    """How many of ``n_finished`` trials TPESampler counts as good by default (private: ``default_gamma``)."""
    return tpe_module().default_gamma(n_finished)


# ----------------------------------------------------------------------------- MLflow
def mlflow_tables():
    """MLflow's tracking table models (private: ``mlflow.store.tracking.dbmodels.models``)."""
    from mlflow.store.tracking.dbmodels import models

    return models


def sql_store(client):
    """The client's tracking store when it is MLflow's SQL store, else None (REST, files).
    Private: ``MlflowClient._tracking_client`` and the store's module path."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def import_sql_store() -> None:
    """Import MLflow's SQL tracking store (a client imports it on its first call to a SQL store)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401


# ----------------------------------------------------------------------------- canaries
def optuna_private_name_problems() -> List[str]:
    """What this Optuna release lacks of the names above ([] when all is there)."""
    problems: List[str] = []
    checks = {
        "RDBStorage._get_stale_trial_ids": lambda: optuna.storages.RDBStorage._get_stale_trial_ids,
        "optuna.storages._rdb.models": optuna_tables,
        "_CachedStorage._backend": lambda: optuna.storages._CachedStorage(
            optuna.storages.RDBStorage("sqlite:///:memory:"))._backend,
        "optuna.samplers._tpe.sampler._split_trials": lambda: tpe_module()._split_trials,
        "optuna.samplers._tpe.sampler.default_gamma": lambda: tpe_module().default_gamma,
    }
    for name in TPE_SAMPLER_ATTRIBUTES:
        checks[f"TPESampler.{name}"] = lambda name=name: getattr(optuna.samplers.TPESampler(), name)
    for name, get in checks.items():
        try:
            get()
        except (AttributeError, ImportError) as e:
            problems.append(f"{name}: {e}")
    study = optuna.create_study()
    for attr in ("_study_id", "_storage"):
        if not hasattr(study, attr):
            problems.append(f"Study.{attr} is gone")
    got = set(vars(study.ask()))
    if got != TRIAL_ATTRIBUTES:
        problems.append(f"optuna.Trial's attributes are now {sorted(got)}, not {sorted(TRIAL_ATTRIBUTES)}")
    return problems


def mlflow_private_name_problems() -> List[str]:
    """What this MLflow release lacks of the names above ([] when all is there)."""
    try:
        mlflow_tables()
        import_sql_store()
    except ImportError as e:
        return [f"mlflow.store.tracking: {e}"]
    from mlflow.tracking import MlflowClient

    if not hasattr(MlflowClient("sqlite:///:memory:"), "_tracking_client"):
        return ["MlflowClient._tracking_client is gone"]
    return []
