"""Run the real `python -m sweeps` in a subprocess on a small generated image tree."""
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna

from imagegen import make_image_tree

REPO = Path(__file__).resolve().parents[1]

# Small and quick, but still something to learn: 3 classes of 8x8 images with heavy noise.
QUICK = ["dataset=image_folder", "model.num_iters=60", "model.batch_size=16", "eval_every=20",
         "device=cpu", "hydra.sweeper.heartbeat_interval=1"]


def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    if not root.exists():
        make_image_tree(root, train_per_class=30, test_per_class=8, noise=160.0)
    return root


HOOKS = Path(__file__).resolve().parent / "hooks"  # sitecustomize with test-only slow-downs


def sweep_command(workdir: Path, *overrides: str, multirun: bool = True, env=None):
    """(argv, env) of `python -m sweeps [--multirun] QUICK... overrides...` with stores in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "sweeps"] + (["--multirun"] if multirun else [])
    args += QUICK + [f"dataset.root={dataset(workdir.parent)}", f"dataset.cache_dir={workdir.parent / 'cache'}",
                     f"hydra.sweep.dir={workdir / 'multirun'}", f"hydra.run.dir={workdir / 'outputs'}"]
    args += list(overrides)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                **(env or {})}
    return args, full_env


def slow_env(train: float = 0.0, record: float = 0.0) -> dict:
    """Environment that slows training check points / trial recording (tests/hooks)."""
    return {"PYTHONPATH": f"{HOOKS}{os.pathsep}{REPO}", "LINEAR_SWEEPS_TEST_SLOW_TRAIN": str(train),
            "LINEAR_SWEEPS_TEST_SLOW_RECORD": str(record)}


def start_sweep(workdir: Path, *overrides: str, env=None) -> subprocess.Popen:
    args, full_env = sweep_command(workdir, *overrides, env=env)
    return subprocess.Popen(args, cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_sweep(workdir: Path, *overrides: str, multirun: bool = True, check: bool = True, env=None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m sweeps [--multirun] QUICK... overrides...` in ``workdir`` (embedded stores there)."""
    args, full_env = sweep_command(workdir, *overrides, multirun=multirun, env=env)
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def mlflow_client(workdir: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def load_study(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")


def trial_runs(client: mlflow.MlflowClient, experiment: str = "linear-sweeps-image_folder", extra: str = ""):
    exp = client.get_experiment_by_name(experiment)
    flt = "tags.`linear_sweeps.role` = 'trial'" + (f" and {extra}" if extra else "")
    return client.search_runs([exp.experiment_id], flt, max_results=1000)
