"""Test-only slow-downs for sweep subprocesses (put this folder on PYTHONPATH): they stretch the
moments the signal tests aim at without changing what is trained (a study's objective stays
the same, so a relaunch without them resumes the same study).

LINEAR_SWEEPS_TEST_SLOW_TRAIN=S  sleep S seconds at each check point of the batched trainer
LINEAR_SWEEPS_TEST_SLOW_RECORD=S sleep S seconds per trial before a batch's metrics are logged
LINEAR_SWEEPS_TEST_SLOW_CREATE=S  sleep S seconds before a batch's MLflow runs are created, after
                                  touching the file LINEAR_SWEEPS_TEST_CREATE_MARKER (if set)
LINEAR_SWEEPS_TEST_IMPORT_LOG=PATH  when `import mlflow` ran (see the end of this file)
"""
import os
import time

_train = float(os.environ.get("LINEAR_SWEEPS_TEST_SLOW_TRAIN", 0) or 0)
_record = float(os.environ.get("LINEAR_SWEEPS_TEST_SLOW_RECORD", 0) or 0)

if _train:
    import linear_models

    _trainer = linear_models.train_linear_classifiers_batched

    def _slow_trainer(*args, callback=None, **kwargs):
        def slow_callback(progress):
            time.sleep(_train)
            return callback(progress) if callback is not None else []

        return _trainer(*args, callback=slow_callback, **kwargs)

    linear_models.train_linear_classifiers_batched = _slow_trainer

if _record:
    import sweeps.tracking

    _log_records = sweeps.tracking.Tracker.log_records

    def _slow_log_records(self, records, *args, **kwargs):
        time.sleep(_record * len(records))
        return _log_records(self, records, *args, **kwargs)

    sweeps.tracking.Tracker.log_records = _slow_log_records

_create = float(os.environ.get("LINEAR_SWEEPS_TEST_SLOW_CREATE", 0) or 0)

if _create:
    import sweeps.tracking

    _create_runs = sweeps.tracking.Tracker.create_runs
    _marker = os.environ.get("LINEAR_SWEEPS_TEST_CREATE_MARKER")

    def _slow_create_runs(self, *args, **kwargs):
        if _marker:
            open(_marker, "a").close()
        time.sleep(_create)
        return _create_runs(self, *args, **kwargs)

    sweeps.tracking.Tracker.create_runs = _slow_create_runs

_import_log = os.environ.get("LINEAR_SWEEPS_TEST_IMPORT_LOG")
if _import_log:
    # LINEAR_SWEEPS_TEST_IMPORT_LOG=PATH: write "<start> <end>" (time.time()) of `import mlflow` to PATH.
    import importlib.abc
    import importlib.util
    import sys

    class _TimedMlflowImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "mlflow":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                start = time.time()
                try:
                    run(module)
                finally:
                    with open(_import_log, "w") as fh:
                        fh.write(f"{start} {time.time()}")

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _TimedMlflowImport())
