"""When MLflow is imported: on first use, not with the engine.

Importing MLflow takes seconds of Python (its GenAI and data modules load with it). A relaunch
trains its first batch before any MLflow call (the parent run is reopened by
``adapter.reopen_run``), so the import runs on the finisher thread while that batch trains; a
launch whose studies are all new imports it in the background while its data loads.
"""
from __future__ import annotations

import sys
import threading


def import_mlflow_in_background() -> threading.Thread:
    """Import MLflow's client and SQL store (seconds of Python) in a daemon thread: started while
    a launch's data loads, when its studies are new and their parent runs are created at once."""
    def load() -> None:
        import mlflow.tracking  # noqa: F401

        from . import adapter

        adapter.import_sql_store()

    thread = threading.Thread(target=load, name="import-mlflow", daemon=True)
    thread.start()
    return thread


def is_mlflow_error(error: BaseException) -> bool:
    exceptions = sys.modules.get("mlflow.exceptions")  # not loaded: no MLflow call has run
    return exceptions is not None and isinstance(error, exceptions.MlflowException)


def mlflow_exception() -> type:
    from mlflow.exceptions import MlflowException

    return MlflowException
