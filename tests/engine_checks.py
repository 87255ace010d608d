"""Shared checks of the engine's tests (test_signals, test_engine_faults, test_samplers_pruners,
test_study_identity): the study invariant, nothing left RUNNING, and sweeps started in the
background with their output in a file (a pipe nobody reads would block a chatty sweep)."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

from sweeps import new_mlflow_store
from sweep_helpers import HOOKS, REPO, load_study, mlflow_client, sweep_command
from test_sweep import assert_states_agree

EXPERIMENT = "linear-sweeps-image_folder"
# Fast failure detection (a SIGKILLed worker's trials are stale 2 s after its last beat) and no
# images: the engine's bookkeeping is what these tests check, not the figures.
FAST = ["hydra.sweeper.grace_period=2", "hydra.sweeper.progress_bar=false", "tracking.log_images=false"]
PARAM_FAILURES = ("diverged", "error")


def counts(trial) -> bool:
    """The budget rule (sweeps/study.py), restated: COMPLETE, PRUNED and the params' FAILs count."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and (trial.user_attrs.get("fail_reason") or "").startswith(PARAM_FAILURES)


def describe(study) -> str:
    return "; ".join(f"#{t.number} {t.state.name} {t.user_attrs.get('fail_reason', '')}".rstrip()
                     for t in study.trials)


def all_study_names(work: Path):
    return optuna.get_all_study_names(f"sqlite:///{work / 'optuna.db'}")


def assert_nothing_running(work: Path, msg: str = "") -> None:
    """No RUNNING trial in any study, no RUNNING run (trial, study or other) in MLflow."""
    if (work / "optuna.db").exists():
        for name in all_study_names(work):
            study = load_study(work, name)
            running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
            assert not running, f"{msg} study {name}: trials {running} RUNNING ({describe(study)})"
    if (work / "mlflow.db").exists():
        client = mlflow_client(work)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, "attributes.status = 'RUNNING'") if ids else []
        assert not runs, f"{msg} RUNNING MLflow runs: " + ", ".join(
            f"{r.info.run_name} ({r.data.tags.get('linear_sweeps.role')})" for r in runs)


def assert_invariant(work: Path, name: str, n_trials: int, msg: str = ""):
    """The engine's promise for a finished study: exactly ``n_trials`` counted trials, none open,
    every trial with exactly one MLflow run in the agreeing state, its parent run FINISHED and
    nothing RUNNING anywhere. Returns the study."""
    study = load_study(work, name)
    counted = [t for t in study.trials if counts(t)]
    assert len(counted) == n_trials, f"{msg} {name}: {len(counted)} counted trials, not {n_trials}: {describe(study)}"
    open_ = [t.number for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not open_, f"{msg} {name}: open trials {open_}: {describe(study)}"
    client = mlflow_client(work)
    try:
        runs = assert_states_agree(study, client)
    except (AssertionError, KeyError) as e:
        raise AssertionError(f"{msg} {name}: states disagree ({e!r}): {describe(study)}") from e
    linked = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert len(set(linked)) == len(linked) == len(runs), f"{msg} {name}: a run shared by two trials"
    parents = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                 f"tags.`linear_sweeps.role` = 'study' and tags.`optuna.study_name` = '{name}'")
    assert [p.info.run_id for p in parents] == [study.user_attrs["mlflow_parent_run_id"]], f"{msg} {name}: parents"
    assert parents[0].info.status == "FINISHED", f"{msg} {name}: parent run {parents[0].info.status}"
    assert_nothing_running(work, msg)
    return study


def new_workdir(base: Path, name: str) -> Path:
    """``base/name`` with an empty MLflow store (a copy of the product's template, sweeps/new_mlflow_store.py)."""
    work = base / name
    work.mkdir(parents=True)
    new_mlflow_store.mlflow_client(f"sqlite:///{work}/mlflow.db")
    return work


class Sweep:
    """`python -m sweeps --multirun ...` in the background, its output in ``<workdir>/<tag>.log``."""

    def __init__(self, work: Path, *overrides: str, env=None, tag: str = "sweep"):
        args, full_env = sweep_command(work, *overrides, env=env)
        self.log_path = work / f"{tag}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=work, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        self.signalled_at: Optional[float] = None

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def send(self, signum: int) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sweep still running after {timeout:.0f} s:\n{self.log()}") from None

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sweep ended ({self.proc.returncode}) before {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no {what} after {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _count(work: Path, where: str) -> int:
    """Trials with an MLflow run, and ``where`` (read straight from SQLite, read-only)."""
    path = work / "optuna.db"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(
                "SELECT count(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                f"WHERE a.key = 'mlflow_run_id' AND {where}").fetchone()[0]
    except sqlite3.Error:
        return 0  # tables not there yet, or locked for a moment


def open_trials_with_runs(work: Path) -> int:
    """How many RUNNING trials have an MLflow run."""
    return _count(work, "t.state = 'RUNNING'")


def trials_with_runs(work: Path) -> int:
    """How many trials, in any state, have an MLflow run (grows as a launch creates runs)."""
    return _count(work, "1 = 1")


def marker_env(folder: Path, train: float = 0.0, record: float = 0.0) -> dict:
    """slow_env(train, record), and a marker file ``folder/recording`` written each time a batch's
    metrics are about to be logged (before the slow-down), so a test knows recording is under way."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import runpy\n"
        f"runpy.run_path({str(HOOKS / 'sitecustomize.py')!r})\n"
        "import sweeps.tracking\n"
        "_inner = sweeps.tracking.Tracker.log_records\n"
        "def log_records(self, *args, **kwargs):\n"
        f"    open({str(folder / 'recording')!r}, 'a').write('x')\n"
        "    return _inner(self, *args, **kwargs)\n"
        "sweeps.tracking.Tracker.log_records = log_records\n")
    return {"PYTHONPATH": f"{folder}:{REPO}", "LINEAR_SWEEPS_TEST_SLOW_TRAIN": str(train),
            "LINEAR_SWEEPS_TEST_SLOW_RECORD": str(record)}


EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
