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
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .app import config_dir

log = logging.getLogger(__name__)


@dataclass
class WorkersConfig:
    defaults: List[Any] = field(default_factory=lambda: [{"override hydra/launcher": "submitit_local"}, "_self_"])
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


def run_worker(cfg: DictConfig) -> int:
    if not cfg.args:
        raise ValueError("args must list the workers' sweep overrides, e.g. "
                         "'args=[\"+cluster=shared\",\"sweep=tpe\"]', got []")
    command = worker_command(cfg, HydraConfig.get().runtime.output_dir)
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
