"""MLflow side of a sweep: one experiment per sweep config, a parent run per study, a nested
run per trial. Everything goes through one MlflowClient with explicit run ids (no global
"active run"), metrics are sent in batches, and every call is retried with backoff so a
tracking server that restarts loses nothing.

MLflow is imported on the client's first use, not with this module (see mlflow_import.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
import threading
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse

from . import adapter
from .db_urls import redact_url, tracking_uri  # noqa: F401 (redact_url: re-exported)
from .mlflow_import import is_mlflow_error, mlflow_exception
from .new_mlflow_store import mlflow_client
from .sqlite_pragmas import tune_sqlite

if TYPE_CHECKING:
    from mlflow.entities import Metric, RunTag

log = logging.getLogger(__name__)

# Tag names other tools (linear-compare, docs, users' queries) rely on.
TAG_ROLE = "linear_sweeps.role"  # study | trial | single | comparison | reseed
TAG_STUDY = "optuna.study_name"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_ID = "optuna.trial_id"
TAG_TRIAL_STATE = "optuna.trial_state"
TAG_STORAGE = "optuna.storage"
TAG_FAILURE = "failure_reason"
TAG_PARENT = "mlflow.parentRunId"
TAG_OVERRIDES = "hydra.overrides"
TAG_COMMIT = "mlflow.source.git.commit"
TAG_RETRY_OF = "optuna.retry_of"  # the trial number a re-queued trial repeats
TAG_RESEED_OF = "reseed.of_run"  # linear-compare: the run whose config was retrained
TAG_RESEED_SEED = "reseed.seed"

MAX_METRICS_PER_BATCH = 1000
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQL tracking stores
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def mlflow_status(optuna_state: str, fail_reason: Optional[str] = None) -> str:
    """The MLflow run status that agrees with an Optuna trial state.

    COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED; a FAIL caused by an interruption or
    a dead worker (not by the params) -> KILLED.
    """
    if optuna_state == "FAIL" and fail_reason and not fail_reason.startswith(("diverged", "error")):
        return "KILLED"
    return _STATUS.get(optuna_state, "RUNNING")


def absolute_local_uri(uri: str) -> str:
    """Relative sqlite:/// and plain-path URIs become absolute (workers may run elsewhere)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


@functools.lru_cache(maxsize=1)
def code_version() -> Optional[str]:
    """The git commit of the checkout this code runs from, if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _retrying(fn):
    """Retry a tracking call on transient errors (locked SQLite, server restarting)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn(self, *args, **kwargs)
            except Exception as e:
                if not (isinstance(e, OSError) or is_mlflow_error(e)):
                    raise
                transient = isinstance(e, OSError) or any(
                    s in str(e).lower() for s in ("locked", "connection", "temporarily", "timed out", "503", "502"))
                if not transient or attempt == self.retries:
                    raise
                log.warning("tracking call %s failed (%s); retrying in %.1fs", fn.__name__, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)

    return wrapper


class Tracker:
    """Thin, explicit wrapper around MlflowClient for the sweep's runs."""

    def __init__(self, uri: str, experiment: str, artifact_location: Optional[str] = None, *,
                 http_max_retries: int = 8, http_backoff_factor: int = 1, http_timeout: int = 60):
        # The REST client reads its retry policy from the environment.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(http_max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(http_backoff_factor))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(http_timeout))
        self.uri = tracking_uri(absolute_local_uri(uri))  # postgresql://: the installed driver
        if self.uri.startswith("sqlite"):
            tune_sqlite()
        self._client = None
        self._client_lock = threading.Lock()
        self.retries, self.backoff = 6, 0.5
        self.experiment_name = experiment
        self._artifact_location = artifact_location
        self._experiment_id: Optional[str] = None
        self._artifact_root: Optional[str] = None  # the experiment's artifact location
        self._artifact_uris: Dict[str, str] = {}  # run id -> artifact URI, for runs created here

    @property
    def client(self):
        """The MlflowClient (made, and MLflow imported, on first use; a new embedded store starts
        as a copy of an empty one, ``new_mlflow_store``)."""
        with self._client_lock:
            if self._client is None:
                self._client = mlflow_client(self.uri)
            return self._client

    @classmethod
    def from_config(cls, tracking_cfg) -> "Tracker":
        return cls(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_location,
                   http_max_retries=tracking_cfg.http_max_retries,
                   http_backoff_factor=tracking_cfg.http_backoff_factor,
                   http_timeout=tracking_cfg.http_timeout)

    # ------------------------------------------------------------------ experiments and runs
    @property
    @_retrying
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = None
                if self._artifact_location and not self.uri.startswith(("http://", "https://", "databricks")):
                    location = absolute_local_uri(self._artifact_location)
                try:
                    # The kind tag opens the experiment in the UI's "Model training" view.
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=location,
                        tags={"mlflow.experimentKind": "custom_model_development"})
                except mlflow_exception():  # another worker created it first
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    @_retrying
    def open_store(self) -> None:
        """Connect (a new embedded store is made from the template first) without creating anything."""
        self.client.get_experiment_by_name(self.experiment_name)

    @_retrying
    def create_run(self, name: str, tags: Mapping[str, str], params: Optional[Mapping] = None) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=name, tags=_run_tags(tags))
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        if params:
            self.client.log_batch(run.info.run_id, params=[Param(k, _param_str(v)) for k, v in params.items()])
        return run.info.run_id

    def create_runs(self, runs: Sequence[Tuple[str, Mapping[str, object], Optional[Mapping]]]) -> List[Optional[str]]:
        """Create runs (name, tags, params) RUNNING; returns their ids, in order. On a SQL store
        all in one transaction; if that fails (or elsewhere), one at a time, so a run that
        cannot be created fails alone: None in its place."""
        if self._sql_store() is not None and runs:
            try:
                return self._create_runs_sql([adapter.NewRun(name, _run_tags(tags), {
                    k: _param_str(v) for k, v in (params or {}).items()}) for name, tags, params in runs])
            except Exception as e:  # noqa: BLE001 -- find the one that fails
                log.warning("creating %d runs in one write failed (%s); creating them one at a time", len(runs), e)
        run_ids: List[Optional[str]] = []
        for name, tags, params in runs:
            try:
                run_ids.append(self.create_run(name, tags, params))
            except Exception:  # noqa: BLE001
                log.exception("could not create MLflow run %r", name)
                run_ids.append(None)
        return run_ids

    @_retrying
    def _create_runs_sql(self, runs: List["adapter.NewRun"]) -> List[str]:
        made = adapter.create_runs(self._sql_store(), self.experiment_id, self.artifact_root, runs,
                                          int(time.time() * 1000))
        self._artifact_uris.update(made)
        return [run_id for run_id, _ in made]

    @property
    def artifact_root(self) -> str:
        if self._artifact_root is None:
            self._artifact_root = self.get_experiment().artifact_location
        return self._artifact_root

    @_retrying
    def get_experiment(self):
        return self.client.get_experiment(self.experiment_id)

    def _sql_store(self):
        """MLflow's SQL store behind this client (bulk writes), or None."""
        if not hasattr(self, "_store"):
            self._store = adapter.sql_store(self.client)
        return self._store

    @_retrying
    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def end_runs(self, statuses: Mapping[str, str]) -> None:
        """End many runs ({run id: status}); on a SQL store in one transaction."""
        if not statuses:
            return
        if self._sql_store() is None:
            for run_id, status in statuses.items():
                self.end_run(run_id, status)
            return
        self._end_runs_sql(dict(statuses))

    @_retrying
    def _end_runs_sql(self, statuses: Dict[str, str]) -> None:
        adapter.end_runs(self._sql_store(), statuses, int(time.time() * 1000))

    @_retrying
    def reopen_run(self, run_id: str) -> str:
        """Set a finished run RUNNING again: "reopened", "missing" or "deleted" (in the trash).
        On a SQL store, written straight in its database: MLflow is not imported for it."""
        if self.uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES:
            return adapter.reopen_run(self.uri, run_id)
        try:
            run = self.client.get_run(run_id)
        except mlflow_exception() as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return "missing"
        if run.info.lifecycle_stage != "active":
            return "deleted"
        self.client.update_run(run_id, status="RUNNING")
        return "reopened"

    @_retrying
    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_retrying
    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    @_retrying
    def search(self, filter_string: str, max_results: int = 5000):
        return self.client.search_runs([self.experiment_id], filter_string, max_results=max_results)

    # ------------------------------------------------------------------ metrics and artifacts
    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_metric_objects(run_id, [Metric(k, float(v), now, step) for k, v in values.items()])

    def log_series(self, run_id: str, series: Mapping[str, tuple],
                   tags: Optional[Mapping[str, object]] = None) -> None:
        """series: {key: (steps, values)} sent in batches of at most 1,000 points; ``tags`` ride
        along with the first batch."""
        self._log_metric_objects(run_id, _series_metrics(series), tags)

    def log_records(self, records: Sequence[Tuple[str, Mapping[str, tuple], Optional[Mapping[str, object]]]]
                    ) -> List[Optional[BaseException]]:
        """Many runs' series and tags, (run id, {key: (steps, values)}, tags) each; on a SQL
        store in one transaction; if that fails (or elsewhere), :meth:`log_series` per run.
        Returns what each record's write raised (None: written)."""
        if self._sql_store() is not None and records:
            try:
                self._log_records_sql([adapter.RunRecord(run_id, _series_metrics(series), {
                    k: str(v) for k, v in (tags or {}).items()}) for run_id, series, tags in records])
                return [None] * len(records)
            except Exception as e:  # noqa: BLE001 -- find the one that fails
                log.warning("logging %d runs in one write failed (%s); logging them one at a time", len(records), e)
        errors: List[Optional[BaseException]] = []
        for run_id, series, tags in records:
            try:
                self.log_series(run_id, series, tags)
                errors.append(None)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        return errors

    @_retrying
    def _log_records_sql(self, records: List["adapter.RunRecord"]) -> None:
        adapter.log_records(self._sql_store(), records)

    def _log_metric_objects(self, run_id: str, metrics: Sequence[Metric], tags: Optional[Mapping] = None) -> None:
        from mlflow.entities import RunTag

        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for start in range(0, max(len(metrics), 1 if run_tags else 0), MAX_METRICS_PER_BATCH):
            self._log_batch(run_id, metrics[start:start + MAX_METRICS_PER_BATCH], run_tags if start == 0 else [])

    @_retrying
    def _log_batch(self, run_id: str, metrics: Sequence[Metric], tags: Sequence[RunTag] = ()) -> None:
        self.client.log_batch(run_id, metrics=list(metrics), tags=list(tags))

    @_retrying
    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, _param_str(v)) for k, v in params.items()])

    @_retrying
    def log_artifacts(self, run_id: str, local_dir, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def local_artifact_dir(self, run_id: str) -> Optional[Path]:
        """The run's artifact folder when the artifact store is a local folder, else None."""
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self._artifact_uris[run_id] = self.get_run(run_id).info.artifact_uri
        parsed = urlparse(uri)
        if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
            return Path(unquote(parsed.path))
        if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # a plain path
            return Path(uri)
        return None

    @contextlib.contextmanager
    def artifact_folder(self, run_id: str) -> Iterator[Path]:
        """A folder whose files become the run's artifacts when the block ends.

        Local artifact stores get the run's own folder (written in place, no copy); others a
        temporary folder uploaded at the end of the block.
        """
        local = self.local_artifact_dir(run_id)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
            yield local
            return
        with tempfile.TemporaryDirectory(prefix="artifacts-") as tmp:
            yield Path(tmp)
            self.log_artifacts(run_id, tmp)

    @_retrying
    def download_artifact(self, run_id: str, path: str, dst) -> str:
        return self.client.download_artifacts(run_id, path, str(dst))


def _param_str(v) -> str:
    return str(v)[:6000]


def _run_tags(tags: Mapping[str, object]) -> Dict[str, str]:
    """A new run's tags as strings (None values left out), with the code's git commit."""
    out = {k: str(v) for k, v in tags.items() if v is not None}
    if code_version():
        out.setdefault(TAG_COMMIT, code_version())
    return out


def _series_metrics(series: Mapping[str, tuple]) -> List[Metric]:
    """{key: (steps, values)} as MLflow metrics, all stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(v), now, int(s)) for key, (steps, values) in series.items()
            for s, v in zip(steps, values)]
