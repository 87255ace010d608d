"""Start a sweep as a user does: `python -m sweeps --multirun ARGS` in a folder, with its embedded
stores (optuna.db, mlflow.db) there. The one way the benchmarks launch the product."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_sweeps(args: Sequence[str], work: Path, sweep_dir: Path, what: str = "sweep") -> dict:
    """Run it to its end; returns the command, ``start_at`` (time.time() just before the process
    started), ``wall_seconds`` and the studies of its optimization_results.yaml."""
    cmd = [sys.executable, "-m", "sweeps", "--multirun", *args, "hydra.sweeper.progress_bar=false",
           f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(REPO)}
    start_at = time.time()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    studies = yaml.safe_load((Path(sweep_dir) / "optimization_results.yaml").read_text())["studies"]
    return {"command": cmd, "start_at": start_at, "wall_seconds": wall, "studies": studies}
