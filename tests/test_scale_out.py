"""Many workers, one study, against real services: PostgreSQL (the study) and a real
`mlflow server` process backed by PostgreSQL (the runs).

Every worker is the real `python -m sweeps --multirun ...` in its own process, started with
the same command, study name and storage URL. The checks are the issue's promises:
exactly n_trials COMPLETE trials, unique params in the grid case, one FINISHED MLflow run per
trial linked both ways; a worker killed with SIGKILL mid-trial leaves a trial that is FAIL in
Optuna, KILLED in MLflow and retried once; restarting the tracking server loses nothing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from pg import pg_server, pg_url, start_mlflow_server  # noqa: F401  (fixtures)
from sweep_helpers import QUICK, REPO, dataset, slow_env

STUDY = "team"
GRID = ["sweep=grid", "hydra.sweeper.batch_size=1", "hydra.sweeper.grace_period=5",
        "hydra.sweeper.progress_bar=false", "tracking.log_images=false"]
# Slow enough (about 8 s a trial) to kill a worker or restart the server mid-sweep: the trainer
# sleeps at each of its 16 check points (tests/hooks), leaving the cores to the other tests.
SLOW = ["model.num_iters=800", "eval_every=50"]
SLOW_ENV = slow_env(train=0.5)


@pytest.fixture(scope="module")
def mlflow_server(pg_server, tmp_path_factory):  # noqa: F811
    """One real tracking server for the module (each test has its own experiment)."""
    service, db = start_mlflow_server(pg_server, tmp_path_factory.mktemp("mlflow-server"))
    yield service
    service.stop()
    pg_server.drop_database(db)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("data"))


class Worker:
    """One `python -m sweeps --multirun` process; output in a log file."""

    def __init__(self, index: int, tmp: Path, images: Path, overrides: List[str]):
        slow = SLOW[0] in overrides
        self.index = index
        self.log_path = tmp / f"worker{index}.log"
        workdir = tmp / f"worker{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "sweeps", "--multirun", *QUICK, f"dataset.root={images}",
                f"dataset.cache_dir={images.parent / 'cache'}", f"hydra.sweep.dir={workdir / 'multirun'}",
                *overrides]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(SLOW_ENV if slow else slow_env())})

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.index} still running after {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def start_workers(images, tmp_path):
    """start_workers(n, storage, tracking_uri, experiment, *overrides): n workers of one study;
    any still running when the test ends are killed."""
    started: List[Worker] = []

    def start(n: int, storage: str, tracking_uri: str, experiment: str, *overrides: str) -> List[Worker]:
        common = [f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={STUDY}",
                  f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *GRID, *overrides]
        workers = [Worker(len(started) + i, tmp_path, images, common) for i in range(n)]
        started.extend(workers)
        return workers

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def wait_all(workers: List[Worker], timeout: float = 400.0, expect_rc=0) -> None:
    deadline = time.monotonic() + timeout
    for w in workers:
        rc = w.wait(max(1.0, deadline - time.monotonic()))
        if expect_rc is not None:
            assert rc == expect_rc, f"worker {w.index} exited with {rc}:\n{w.log()}"


def poll(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def trial_states(storage: str) -> List[TrialState]:
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
    except KeyError:  # not created yet
        return []
    return [t.state for t in study.get_trials(deepcopy=False)]


def trial_runs(client: mlflow.MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'", max_results=1000)


def check_exactly_once(storage: str, client: mlflow.MlflowClient, experiment: str, n_trials: int):
    """The invariants every multi-worker sweep must end with; returns (trials, runs by id)."""
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if not t.state.is_finished()], "trials left RUNNING/WAITING"
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == n_trials, f"a grid point ran twice: {params}"

    runs = {r.info.run_id: r for r in trial_runs(client, experiment)}
    assert len(runs) == len(trials), f"{len(runs)} MLflow trial runs for {len(trials)} Optuna trials"
    by_trial_id = {}
    for run in runs.values():
        tid = int(run.data.tags["optuna.trial_id"])
        assert tid not in by_trial_id, f"trial {tid} has two MLflow runs"
        by_trial_id[tid] = run
    for t in trials:  # linked both ways
        run = by_trial_id[t._trial_id]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["optuna.trial_state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED", (t.number, run.info.status)
            assert run.data.metrics["val_acc"] == pytest.approx(t.value)
    parents = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                 "tags.`linear_sweeps.role` = 'study'")
    assert [p.info.status for p in parents] == ["FINISHED"], "one parent run per study, FINISHED"
    return trials, runs


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_share_one_grid_study(pg_url, mlflow_server, start_workers):  # noqa: F811
    n = 6
    # log_weights=false: a worker that finalizes the study without the best trial's weights
    # must leave its test accuracy to the worker that trained it, not crash.
    workers = start_workers(3, pg_url, mlflow_server.uri, "three-workers",
                            f"hydra.sweeper.n_trials={n}", "tracking.log_weights=false")
    wait_all(workers)
    client = mlflow.MlflowClient(mlflow_server.uri)
    trials, _ = check_exactly_once(pg_url, client, "three-workers", n)
    assert len(trials) == n  # nothing failed, nothing retried
    for w in workers:  # every worker ended the study with the same, complete summary
        assert "trials: 6 complete, 0 pruned, 0 failed" in w.log(), w.log()
    best = optuna.load_study(study_name=STUDY, storage=pg_url).best_trial
    assert "test_acc" in client.get_run(best.user_attrs["mlflow_run_id"]).data.metrics


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_worker_trial_is_failed_killed_and_retried_once(pg_url, mlflow_server, start_workers):  # noqa: F811
    n = 3  # the whole budget is asked when the worker dies: only its retry is left to run
    workers = start_workers(3, pg_url, mlflow_server.uri, "killed-worker",
                            f"hydra.sweeper.n_trials={n}", *SLOW)
    # batch_size=1: each worker holds at most one RUNNING trial, so three RUNNING trials mean
    # worker 0 is mid-trial.
    poll(lambda: trial_states(pg_url).count(TrialState.RUNNING) == 3, 120, "all three workers to be running a trial")
    study = optuna.load_study(study_name=STUDY, storage=pg_url)
    running_ids = {t._trial_id for t in study.get_trials(states=(TrialState.RUNNING,))}
    workers[0].proc.send_signal(signal.SIGKILL)
    assert workers[0].wait(10) == -signal.SIGKILL
    wait_all(workers[1:])

    client = mlflow.MlflowClient(mlflow_server.uri)
    trials, runs = check_exactly_once(pg_url, client, "killed-worker", n)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    (dead,) = failed
    assert dead._trial_id in running_ids
    assert dead.user_attrs["fail_reason"] == "worker died (no heartbeat)"
    dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "KILLED"
    assert dead_run.data.tags["failure_reason"] == "worker died (no heartbeat)"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1, "re-queued exactly once"
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.system_attrs["retry_history"] == [dead.number]
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["optuna.retry_of"] == str(dead.number)
    assert retry_run.info.run_id != dead_run.info.run_id
    assert len(trials) == n + 1


@pytest.mark.postgres
@pytest.mark.slow
def test_tracking_server_restart_mid_sweep_loses_nothing(pg_url, mlflow_server, start_workers):  # noqa: F811
    n, num_iters, loss_every = 4, 800, 10
    workers = start_workers(2, pg_url, mlflow_server.uri, "server-restart",
                            f"hydra.sweeper.n_trials={n}", *SLOW, f"tracking.loss_every={loss_every}")
    poll(lambda: trial_states(pg_url).count(TrialState.COMPLETE) >= 1, 120, "a first COMPLETE trial")
    mlflow_server.stop()  # SIGTERM, as `docker compose restart mlflow` does
    done_while_down = trial_states(pg_url).count(TrialState.COMPLETE)
    assert done_while_down < n, "the sweep ended before the server went down; make trials slower"
    time.sleep(3)  # workers now hit a closed port
    mlflow_server.start()  # same port
    wait_all(workers)
    assert all(w.proc.returncode == 0 for w in workers)

    client = mlflow.MlflowClient(mlflow_server.uri)
    trials, runs = check_exactly_once(pg_url, client, "server-restart", n)
    assert len(trials) == n
    # Nothing lost, nothing twice: every run has each metric point exactly once.
    expected_loss_steps = list(range(0, num_iters, loss_every)) + [num_iters - 1]
    for run_id in runs:
        for key in ("train_loss", "val_acc", "train_acc"):
            history = client.get_metric_history(run_id, key)
            steps = [m.step for m in history]
            assert len(steps) == len(set(steps)), f"run {run_id}: {key} has a step recorded twice"
        assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == expected_loss_steps
        assert len(client.get_metric_history(run_id, "val_acc")) == num_iters // 50
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert "weights.pt" in artifacts, artifacts


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_fleet_through_submitit_local_launcher(pg_url, mlflow_server, images, tmp_path):  # noqa: F811
    """`python -m sweeps.workers` starts the workers as launcher jobs (submitit's local executor
    stands in for SLURM); they join one study through +cluster=shared and the environment."""
    n = 4
    sweep = ["+cluster=shared", *QUICK, f"dataset.root={images}", f"dataset.cache_dir={images.parent / 'cache'}",
             f"hydra.sweeper.study_name={STUDY}", f"hydra.sweeper.n_trials={n}", "tracking.experiment=fleet", *GRID]
    quoted = ",".join('"' + s.replace('"', '\\"') + '"' for s in sweep)
    args = [sys.executable, "-m", "sweeps.workers", "--multirun", "worker=range(2)", "hydra/launcher=local_workers",
            f"hydra.sweep.dir={tmp_path / 'fleet'}", f"args=[{quoted}]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPTUNA_STORAGE": pg_url, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    client = mlflow.MlflowClient(mlflow_server.uri)
    trials, _ = check_exactly_once(pg_url, client, "fleet", n)
    assert len(trials) == n
    # Two launcher jobs, each ran one worker that wrote its own results.
    results = sorted((tmp_path / "fleet").glob("*/sweep/optimization_results.yaml"))
    assert [p.parts[-3] for p in results] == ["0", "1"], list((tmp_path / "fleet").rglob("*"))
    assert len(list((tmp_path / "fleet" / ".submitit").glob("*/*_result.pkl"))) == 2


@pytest.mark.parametrize("worker, gpus, expected", [(0, [], None), (1, [0, 1, 2], "1"), (4, [2, 3], "2")])
def test_workers_app_pins_each_worker_to_its_gpu(worker, gpus, expected):
    from omegaconf import OmegaConf

    from sweeps.workers import worker_command, worker_env

    cfg = OmegaConf.create({"worker": worker, "gpus": gpus, "args": ["+cluster=shared", "sweep=grid"]})
    assert worker_env(cfg, {"PATH": "/bin"}).get("CUDA_VISIBLE_DEVICES") == expected
    cmd = worker_command(cfg, "/out/3")
    assert cmd[1:] == ["-m", "sweeps", "--multirun", "+cluster=shared", "sweep=grid", "hydra.sweep.dir=/out/3/sweep"]
