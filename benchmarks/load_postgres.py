"""Load check of a shared study: many workers, many short trials, one PostgreSQL database.

    python benchmarks/load_postgres.py                     # 8 workers, 200 trials
    python benchmarks/load_postgres.py --workers 4 --trials 100 --json out.json
    python benchmarks/load_postgres.py --admin-url postgresql+psycopg2://USER:PW@HOST:5432/postgres

Starts a real `mlflow server` (PostgreSQL backend store, artifacts served by the server) and
N real `python -m sweeps --multirun` workers on one random-sampler study in a fresh PostgreSQL
database, with trials so short (tiny generated images, a few SGD steps) that the workers spend
their time coordinating: asking under the study lock, heartbeats, telling, one MLflow run each.
The databases are dropped at the end (--keep to look at them).

Reports trials per second (first trial started -> last trial finished, and end to end with the
workers' start-up), and the checks: exactly --trials COMPLETE trials, none lost, none run twice
(trial numbers, MLflow runs per trial), zero database errors (workers' exit codes and logs,
PostgreSQL's deadlock counter).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the test helpers: generated images, PostgreSQL, servers
from imagegen import make_image_tree  # noqa: E402
from pg import DEFAULT_ADMIN_URLS, MLFLOW_SERVER_ENV, PgServer, Service, free_port, mlflow_server_argv  # noqa: E402

DB_ERRORS = re.compile(r"OperationalError|IntegrityError|DatabaseError|InterfaceError|deadlock detected|"
                       r"could not serialize|psycopg2\.errors", re.I)
STUDY, EXPERIMENT = "load", "load-postgres"


def worker_args(args, images: Path, cache: Path, storage: str, tracking_uri: str, out: Path) -> list:
    return [sys.executable, "-m", "sweeps", "--multirun", "sweep=random", "dataset=image_folder",
            f"dataset.root={images}", f"dataset.cache_dir={cache}", "device=cpu",
            f"model.num_iters={args.num_iters}", "model.batch_size=16", f"eval_every={args.num_iters}",
            f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.batch_size={args.batch}",
            f"hydra.sweeper.study_name={STUDY}", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.heartbeat_interval=5", "hydra.sweeper.progress_bar=false",
            f"tracking.uri={tracking_uri}", f"tracking.experiment={EXPERIMENT}", "tracking.log_images=false",
            f"tracking.loss_every={args.num_iters}", f"hydra.sweep.dir={out}"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--num-iters", type=int, default=20, help="SGD steps per trial (short on purpose)")
    p.add_argument("--batch", type=int, default=1, help="trials each worker asks at a time (hydra.sweeper.batch_size)")
    p.add_argument("--admin-url", default=os.environ.get("LINEAR_SWEEPS_PG_URL", DEFAULT_ADMIN_URLS[0]),
                   help="a PostgreSQL URL allowed to create databases")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--keep", action="store_true", help="keep the databases and the work folder")
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


def start_workers(args, procs: list, images: Path, work: Path, storage: str, tracking_uri: str) -> None:
    """Start ``--workers`` sweep processes into ``procs`` (filled as they start, so that the
    caller can kill the ones already running if a later start fails)."""
    for i in range(args.workers):
        log = open(work / f"worker{i}.log", "wb")
        cmd = worker_args(args, images, work / "cache", storage, tracking_uri, work / f"worker{i}")
        procs.append(subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONPATH": str(REPO)}))
        log.close()


def wait_workers(procs: list, timeout: float) -> list:
    """The workers' exit codes; those still running after ``timeout`` seconds in all are killed."""
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def log_errors_of(work: Path, workers: int) -> dict:
    """Up to three database-error lines per worker log that has any."""
    log_errors = {}
    for i in range(workers):
        hits = [line for line in (work / f"worker{i}.log").read_text(errors="replace").splitlines()
                if DB_ERRORS.search(line)]
        if hits:
            log_errors[f"worker{i}"] = hits[:3]
    return log_errors


def pg_counters(pg, database: str) -> tuple:
    """PostgreSQL's (deadlocks, commits) counters of ``database``."""
    conn = pg._connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT deadlocks, xact_commit FROM pg_stat_database WHERE datname = %s", (database,))
        return cur.fetchone()
    finally:
        conn.close()


def collect_figures(args, work: Path, pg, optuna_db: str, storage: str, tracking_uri: str,
                    codes: list, wall: float) -> tuple:
    """The figures of the run, the worker logs' database errors, and how many trials the study holds."""
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from sweeps.adapter import trial_id

    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials()
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    first = min(t.datetime_start for t in trials).timestamp()
    last = max(t.datetime_complete for t in complete).timestamp()
    numbers = [t.number for t in trials]
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'", max_results=10000)
    runs_per_trial = Counter(r.data.tags.get("optuna.trial_id") for r in runs)
    linked = sum(runs_per_trial.get(str(trial_id(t))) == 1 and
                 any(r.info.run_id == t.user_attrs.get("mlflow_run_id") for r in runs) for t in complete)
    log_errors = log_errors_of(work, args.workers)
    deadlocks, commits = pg_counters(pg, optuna_db)
    figures = {
        "workers": args.workers, "trials": args.trials, "num_iters": args.num_iters, "ask_batch": args.batch,
        "complete": len(complete), "states": dict(states),
        "lost": args.trials - len(complete),
        "duplicated_trial_numbers": len(numbers) - len(set(numbers)),
        "runs": len(runs), "trials_without_exactly_one_linked_run": len(complete) - linked,
        "duplicated_runs": sum(n - 1 for n in runs_per_trial.values() if n > 1),
        "worker_exit_codes": codes, "database_errors_in_logs": sum(len(v) for v in log_errors.values()),
        "postgres_deadlocks": deadlocks, "postgres_commits": commits,
        "seconds_first_start_to_last_complete": round(last - first, 2),
        "trials_per_second": round(len(complete) / (last - first), 2),
        "seconds_end_to_end": round(wall, 2),
        "trials_per_second_end_to_end": round(len(complete) / wall, 2),
    }
    return figures, log_errors, len(trials)


def check_and_print(args, figures: dict, log_errors: dict, n_trials: int) -> bool:
    """Print the figures and the verdict (and write --json); True when nothing was lost, duplicated or failed."""
    print(json.dumps(figures, indent=2))
    for name, hits in log_errors.items():
        print(f"{name}: " + " | ".join(hits), file=sys.stderr)
    ok = (figures["lost"] == 0 and figures["duplicated_trial_numbers"] == 0 and figures["duplicated_runs"] == 0
          and figures["trials_without_exactly_one_linked_run"] == 0 and not any(figures["worker_exit_codes"])
          and figures["database_errors_in_logs"] == 0 and figures["postgres_deadlocks"] == 0
          and n_trials == args.trials)
    print("OK: no trial lost or duplicated, no database error" if ok else "FAILED: see the figures above")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return ok


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mlflow  # noqa: F401 - up front, as before: a missing package fails before any database exists
    import optuna  # noqa: F401

    pg = PgServer(args.admin_url)
    work = Path(tempfile.mkdtemp(prefix="load-postgres-"))
    optuna_db, mlflow_db = pg.create_database("load_optuna"), pg.create_database("load_mlflow")
    storage = pg.url(optuna_db)
    server = Service("mlflow", mlflow_server_argv(pg.url(mlflow_db), work / "mlartifacts", port := free_port(),
                                                  workers=2),
                     health_url=f"http://127.0.0.1:{port}/health", log_dir=work, env=MLFLOW_SERVER_ENV, cwd=work)
    procs: list = []
    try:
        images = make_image_tree(work / "images", train_per_class=30, test_per_class=8, noise=160.0)
        server.start()
        tracking_uri = f"http://127.0.0.1:{port}"
        print(f"{args.workers} workers, {args.trials} trials of {args.num_iters} SGD steps, asked {args.batch} at a "
              f"time; study in PostgreSQL ({pg.admin_url.host}:{pg.admin_url.port}/{optuna_db}), tracking: mlflow "
              f"server {tracking_uri} (PostgreSQL backend store, artifacts served); work dir {work}", flush=True)
        started = time.time()
        start_workers(args, procs, images, work, storage, tracking_uri)
        codes = wait_workers(procs, args.timeout)
        wall = time.time() - started
        figures, log_errors, n_trials = collect_figures(args, work, pg, optuna_db, storage, tracking_uri, codes, wall)
        if not check_and_print(args, figures, log_errors, n_trials):
            sys.exit(1)
        return figures
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.stop()
        if not args.keep:
            pg.drop_database(optuna_db)
            pg.drop_database(mlflow_db)
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
