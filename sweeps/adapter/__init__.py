"""Every use of Optuna's and MLflow's private API, in one place.

The engine needs a few things the libraries' public APIs do not offer. Each function below says
what it relies on, why, and what public call it replaces or falls back to. The canary tests
(tests/test_optuna_adapter.py, tests/test_mlflow_adapter.py) fail with a clear message when a
release changes any of it; `pyproject.toml` admits only the releases they ran on.
"""
from .mlflow_internals import (MAX_KEY, MAX_VALUE, RUN_NAME_TAG, USER_TAG, NewRun, RunRecord, create_runs,
                               end_runs, import_sql_store, log_records, mlflow_canary_problems, reopen_run,
                               sql_store)
from .optuna_internals import (optuna_canary_problems, record_heartbeats, set_user_attrs, stale_trial_ids,
                               storage_of, study_id, trial_id)
from .optuna_tells import tell_trials
from .optuna_trials import bind_trial, copy_trial, insert_trials, trials_canary_problems

__all__ = ["MAX_KEY", "MAX_VALUE", "RUN_NAME_TAG", "USER_TAG", "NewRun", "RunRecord", "bind_trial", "copy_trial",
           "create_runs", "end_runs", "import_sql_store", "insert_trials", "log_records", "mlflow_canary_problems",
           "optuna_canary_problems", "record_heartbeats", "reopen_run", "set_user_attrs", "sql_store",
           "stale_trial_ids", "storage_of", "study_id", "tell_trials", "trial_id", "trials_canary_problems"]
