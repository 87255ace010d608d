"""`linear-sweep-workers` through a real Hydra launcher: submitit's local executor (what SLURM
does, as subprocesses on this machine). Two launcher jobs each run one worker; the workers join
ONE study (same study_name, one SQLite storage) and share its n_trials: exactly n_trials
COMPLETE trials, each with exactly one FINISHED MLflow run, linked both ways.

Fresh SQLite stores shared by workers that start together used to fail one worker ("table ...
already exists"): sweeps.workers creates them once, under a lock, before the sweeps start.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from sweep_helpers import QUICK, REPO, dataset

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs linear-sweeps[cluster] (submitit)")

N_TRIALS = 4
STUDY = "fleet"
EXPERIMENT = "submitit-fleet"


def hydra_list(items) -> str:
    """A Hydra override list of strings: args=["a=1","b=/x"]."""
    return "[" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def test_worker_stores_are_what_the_workers_resolve(tmp_path):
    from sweeps.workers import worker_stores

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    env["PYTHONPATH"] = str(REPO)
    # A swept override (one study per loss) does not stop the composition of the stores.
    assert worker_stores(["loss=svm,softmax", f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db",
                          f"tracking.uri=sqlite:///{tmp_path}/m.db"], env) == (
        f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/o.db")
    assert worker_stores(["sweep=grid"], env) == ("sqlite:///mlflow.db", "sqlite:///optuna.db")  # the defaults
    env.update(MLFLOW_TRACKING_URI="http://tracking:5000", OPTUNA_STORAGE="postgresql+psycopg2://db/optuna")
    assert worker_stores(["+cluster=shared"], env) == ("http://tracking:5000", "postgresql+psycopg2://db/optuna")


@pytest.mark.slow
def test_two_submitit_workers_share_one_study_to_exactly_n_trials(tmp_path):
    images = dataset(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = [*QUICK, f"dataset.root={images}", f"dataset.cache_dir={tmp_path / 'cache'}", "sweep=random",
             f"hydra.sweeper.n_trials={N_TRIALS}", f"hydra.sweeper.study_name={STUDY}",
             f"hydra.sweeper.storage={storage}", f"tracking.uri={tracking}", f"tracking.experiment={EXPERIMENT}",
             "hydra.sweeper.batch_size=1", "hydra.sweeper.progress_bar=false", "tracking.log_images=false"]
    fleet = tmp_path / "fleet"
    args = [sys.executable, "-m", "sweeps.workers", "--multirun", "worker=range(2)", "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={fleet}", f"args={hydra_list(sweep)}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(fleet.glob(".submitit/*/*_log.*")))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}\n{logs}"

    # Two launcher jobs (submitit, not the basic launcher), each ran one worker to the end.
    assert len(list(fleet.glob(".submitit/*/*_result.pkl"))) == 2, list(fleet.rglob("*"))
    results = sorted(fleet.glob("*/sweep/optimization_results.yaml"))
    assert [p.parts[-3] for p in results] == ["0", "1"], list(fleet.rglob("*"))

    # One study, exactly n_trials trials, all COMPLETE.
    assert optuna.get_all_study_names(storage) == [STUDY]
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: N_TRIALS}, [(t.number, t.state) for t in trials]

    # Each trial: exactly one MLflow run, FINISHED, linked both ways.
    client = mlflow.MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'", max_results=100)
    assert len(runs) == N_TRIALS, [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert sorted(by_number) == sorted(t.number for t in trials)
    for t in trials:
        run = by_number[t.number]
        assert run.data.tags["optuna.study_name"] == STUDY
        assert t.user_attrs.get("mlflow_run_id") == run.info.run_id
        assert run.data.metrics["val_acc"] == pytest.approx(t.value)
