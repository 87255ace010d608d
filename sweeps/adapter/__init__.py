"""Every use of Optuna's and MLflow's private API, in one place.

The engine needs a few things the libraries' public APIs do not offer. Each function below says
what it relies on, why, and what public call it replaces or falls back to. The private names
themselves (attributes, module paths) are touched in ``private_names.py`` only; the other
modules write the libraries' tables with plain SQLAlchemy. The canary tests
(tests/test_optuna_adapter.py, tests/test_mlflow_adapter.py) fail with a clear message when a
release changes any of it; `pyproject.toml` admits only the releases they ran on.
"""
from .mlflow_internals import (MAX_KEY, MAX_VALUE, RUN_NAME_TAG, USER_TAG, NewRun, RunRecord, create_runs,
                               end_runs, log_records, make_store_template, mlflow_canary_problems, reopen_run)
from .optuna_internals import optuna_canary_problems, record_heartbeats, set_user_attrs, stale_trial_ids
from .optuna_tells import tell_trials
from .optuna_tpe import BatchTPESampler
from .optuna_trials import bind_trial, copy_trial, insert_trials, trials_canary_problems
from .private_names import import_sql_store, sql_store, storage_of, study_id, trial_id

__all__ = ["MAX_KEY", "MAX_VALUE", "RUN_NAME_TAG", "USER_TAG", "BatchTPESampler", "NewRun", "RunRecord",
           "bind_trial", "copy_trial", "create_runs", "end_runs", "import_sql_store", "insert_trials",
           "log_records", "make_store_template", "mlflow_canary_problems", "optuna_canary_problems",
           "record_heartbeats", "reopen_run", "set_user_attrs", "sql_store", "stale_trial_ids", "storage_of",
           "study_id", "tell_trials", "trial_id", "trials_canary_problems"]
