"""`python -m sweeps.workers`: start N sweep workers through a Hydra launcher (SLURM, local).

The sweeper trains its trials in its own process; to use more machines or GPUs, start more
workers with the same sweep command: they join one study (hydra.sweeper.storage) and share its
n_trials. This app places those workers with any Hydra launcher, e.g. submitit on SLURM:

    export OPTUNA_STORAGE=postgresql+psycopg2://USER:PASSWORD@db-host:5432/optuna
    export MLFLOW_TRACKING_URI=http://mlflow-host:5000
    python -m sweeps.workers --multirun 'worker=range(8)' hydra/launcher=slurm \\
        'args=["+cluster=shared","sweep=tpe","loss=softmax","device=cuda"]'

Each launcher job runs one worker, `python -m sweeps --multirun <args...>`, as a subprocess
(its own CUDA context; on SLURM its own allocation and GPU), and fails if the worker fails.
`gpus=[0,1,2,3]` pins job i to GPU gpus[i % len(gpus)] on a single machine. The command returns
once every worker has ended; killed workers' trials are re-run by the others (heartbeats).

The default launcher is `local_workers` (submitit's local executor, 12 h per worker; the plain
`submitit_local` kills a worker after 60 min). Workers sharing SQLite stores on one machine
(the defaults: ./optuna.db, ./mlflow.db) would race to create the same tables; the first job
creates them, under a lock, before any worker starts its sweep.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .app import config_dir

log = logging.getLogger(__name__)


@dataclass
class WorkersConfig:
    defaults: List[Any] = field(default_factory=lambda: [{"override hydra/launcher": "local_workers"}, "_self_"])
    worker: int = 0  # this job's index; sweep it to start N workers: worker='range(N)'
    args: List[str] = field(default_factory=list)  # the overrides of every worker's `linear-sweep --multirun`
    gpus: List[int] = field(default_factory=list)  # pin worker i to gpus[i % len(gpus)] (one machine)


ConfigStore.instance().store(name="linear_sweeps_workers", node=WorkersConfig)


def worker_command(cfg: DictConfig, output_dir: str) -> List[str]:
    """The sweep command of one worker; its sweep dir goes under this job's output dir."""
    args = [str(a) for a in cfg.args]
    if not any(a.startswith("hydra.sweep.dir=") for a in args):
        args.append(f"hydra.sweep.dir={output_dir}/sweep")
    return [sys.executable, "-m", "sweeps", "--multirun", *args]


def worker_env(cfg: DictConfig, base: Mapping[str, str]) -> Dict[str, str]:
    """The worker's environment: ``base``, pinned to its GPU when ``gpus`` is given."""
    env = dict(base)
    if cfg.gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(cfg.gpus[cfg.worker % len(cfg.gpus)])
    return env


def worker_stores(args: Sequence[str], env: Mapping[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """(tracking URI, Optuna storage URL) a worker started with ``args`` will use, as it resolves them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    # The composition of one cell: what is swept (loss=svm,softmax) does not name the stores.
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(list(args)) if not o.is_sweep_override()]
    proc = subprocess.run([sys.executable, "-m", "sweeps", "--cfg", "all", "--resolve", *fixed], env=dict(env),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the workers' sweep config does not compose: {proc.stderr.strip()[-2000:]}")
    cfg = OmegaConf.create(proc.stdout)
    return OmegaConf.select(cfg, "tracking.uri"), OmegaConf.select(cfg, "hydra.sweeper.storage")


def create_sqlite_stores(tracking_uri: Optional[str], storage: Optional[str]) -> List[str]:
    """Create the tables of SQLite stores (what each worker would do at start, all at once)."""
    created = []
    if storage and storage.startswith("sqlite:"):
        import optuna

        optuna.storages.RDBStorage(storage)  # creates (or upgrades) the schema, once
        created.append(storage)
    if tracking_uri and tracking_uri.startswith("sqlite:"):
        from .new_mlflow_store import mlflow_client

        mlflow_client(tracking_uri).search_experiments(max_results=1)  # creates its tables
        created.append(tracking_uri)
    return created


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_stores(cfg: DictConfig, sweep_dir: Path, env: Mapping[str, str]) -> None:
    """Create shared SQLite stores once for the whole fleet: one job at a time, the first does it."""
    tracking_uri, storage = worker_stores([str(a) for a in cfg.args], env)
    if not any(u and u.startswith("sqlite:") for u in (tracking_uri, storage)):
        return  # servers (PostgreSQL, an MLflow server) take concurrent workers as they are
    with file_lock(sweep_dir / ".stores.lock"):
        for uri in create_sqlite_stores(tracking_uri, storage):
            log.info("worker %d: SQLite store ready: %s", cfg.worker, uri)


def run_worker(cfg: DictConfig) -> int:
    if not cfg.args:
        raise ValueError("args must list the workers' sweep overrides, e.g. "
                         "'args=[\"+cluster=shared\",\"sweep=tpe\"]', got []")
    hydra_cfg = HydraConfig.get()
    command = worker_command(cfg, hydra_cfg.runtime.output_dir)
    prepare_stores(cfg, Path(hydra_cfg.sweep.dir), os.environ)
    env = worker_env(cfg, os.environ)
    log.info("worker %d (CUDA_VISIBLE_DEVICES=%s): %s", cfg.worker, env.get("CUDA_VISIBLE_DEVICES", "unset"),
             " ".join(command))
    rc = subprocess.run(command, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"worker {cfg.worker} failed: `{' '.join(command)}` exited with {rc}")
    return rc


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="linear_sweeps_workers")
def _hydra_main(cfg: DictConfig) -> int:
    return run_worker(cfg)


def main() -> None:
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        sys.exit("python -m sweeps.workers needs Hydra's submitit launcher: pip install 'linear-sweeps[cluster]'")
    _hydra_main()


if __name__ == "__main__":
    main()
