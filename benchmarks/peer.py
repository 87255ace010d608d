"""linear-sweep against the tool users pick today, side by side in one run, per trial end to end.

    python benchmarks/peer.py --trials 50 --rounds 2          # the measurement (issue #14)
    python benchmarks/peer.py --trials 2 --rounds 1 --iters 50   # a smoke run
    python benchmarks/peer.py --json peer.json --rebuild-venv
    python benchmarks/peer.py --rounds 1 --variant 'pruned=hydra.sweeper.pruner=median'   # one more row

The peer is Hydra's own Optuna sweeper (hydra-optuna-sweeper 1.3.0, which needs optuna<3, so it
gets its own virtual environment, built once into benchmarks/.peer-venv) over the homework
trainer: one classifier per job (linear_models.train_linear_classifier, minibatch SGD), each trial
a run in MLflow (params, train/val/test accuracy), one study per loss (svm, then softmax), jobs
run one after another by Hydra's basic launcher (benchmarks/peer_app/). linear-sweep is
``python -m sweeps --multirun loss=svm,softmax sweep=tpe``. Both search the same space
(conf/sweep/tpe.yaml: log learning rate x log reg, multivariate TPE, 5 random start-up trials,
sampler seed 0 or --sampler-seed), train with the same settings (iterations, batch 200, seed) on the
same split and features (conf/dataset/image_folder.yaml: validation_ratio, split_seed, mean-centred pixels with a
bias column) of the same CIFAR-10 JPEG archive, and log to fresh SQLite stores in a temp folder.

Each round runs the peer, then linear-sweep (rounds interleave: a shared machine's load drifts).
It prints, per round and tool: wall seconds from the command's start to its exit, trials, seconds
per trial end to end and once started (first job's start to last job's end), the best val per
loss, and the peer / linear-sweep ratio per trial; then the goal (>= 20x at an equal or better
best val in both losses).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sweep_process import REPO, run_sweeps
DEFAULT_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
DEFAULT_VENV = REPO / "benchmarks" / ".peer-venv"
PEER_APP = REPO / "benchmarks" / "peer_app" / "peer_app.py"
LOSSES = ("svm", "softmax")
GOAL_RATIO = 20.0
# torch first and alone: 2.13.0 is the CPU wheel on this machine's disk; any other torch spec
# downloads a multi-GB CUDA build. The rest as the peer's users install it (pip picks optuna<3).
TORCH = "torch==2.13.0"
REQUIREMENTS = ("numpy", "Pillow", "hydra-core>=1.3,<1.4", "hydra-optuna-sweeper==1.3.0", "mlflow")
STAMP = ".built"  # holds the requirements the venv was built from; another list rebuilds it
VERSIONS = ("optuna", "hydra", "mlflow", "torch", "sqlalchemy", "numpy")


class PeerVenvError(RuntimeError):
    """The peer's virtual environment could not be built or does not work."""


def _pip_noise(line: str) -> bool:
    # Local package mirrors without a package make pip warn once per name: not the error.
    return line.startswith("WARNING: Location ") and "is ignored" in line


def _pip(python: Path, packages, venv: Path) -> None:
    print(f"[peer venv] pip install {' '.join(packages)}", flush=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not _pip_noise(line))[-3000:]
        raise PeerVenvError(f"pip could not install {' '.join(packages)} into {venv} (exit {proc.returncode}):\n{tail}\n"
                            f"The peer's venv needs PyPI. Fix the cause, then rerun with --rebuild-venv.")


def venv_versions(python: Path) -> dict:
    """The venv's package versions; PeerVenvError when the peer cannot import or has optuna >= 3."""
    code = ("import json, optuna, hydra, mlflow, torch, sqlalchemy, numpy, PIL; "
            "import hydra_plugins.hydra_optuna_sweeper.optuna_sweeper; "
            f"print(json.dumps({{m: __import__(m).__version__ for m in {list(VERSIONS)}}}))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=_clean_env())
    if proc.returncode != 0:
        raise PeerVenvError(f"the peer's venv ({python}) does not import its packages:\n{proc.stderr[-2000:]}\n"
                            f"Rerun with --rebuild-venv.")
    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    if int(versions["optuna"].split(".")[0]) >= 3:
        raise PeerVenvError(f"the peer's venv has optuna {versions['optuna']}; hydra-optuna-sweeper 1.3.0 needs optuna<3")
    return versions


def ensure_venv(venv: Path, rebuild: bool = False) -> dict:
    """Build the peer's venv unless a working one from the same requirements is there.

    Returns {"python", "versions", "build_seconds" (None when reused)}.
    """
    python = venv / "bin" / "python"
    wanted = "\n".join((TORCH, *REQUIREMENTS))
    stamp = venv / STAMP
    if not rebuild and python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return {"python": str(python), "versions": venv_versions(python), "build_seconds": None}
    start = time.perf_counter()
    print(f"[peer venv] building {venv} (once; about 1-2 minutes from a local mirror)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeerVenvError(f"python -m venv {venv} failed:\n{proc.stderr[-2000:]}\n"
                            f"(on Debian/Ubuntu: apt-get install python3-venv)")
    _pip(python, [TORCH], venv)
    _pip(python, list(REQUIREMENTS), venv)
    versions = venv_versions(python)
    stamp.write_text(wanted)
    seconds = time.perf_counter() - start
    print(f"[peer venv] built in {seconds:.0f} s: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    return {"python": str(python), "versions": versions, "build_seconds": seconds}


def _clean_env(**extra) -> dict:
    # The caller's PYTHONPATH may hold this repo, whose hydra_plugins/ Hydra would load into the peer.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    return {**env, "HYDRA_FULL_ERROR": "1", **extra}


def project_settings() -> dict:
    """The search space and split linear-sweep uses by default, read from its own conf/."""
    sweep = yaml.safe_load((REPO / "conf" / "sweep" / "tpe.yaml").read_text())["hydra"]["sweeper"]
    dataset = yaml.safe_load((REPO / "conf" / "dataset" / "image_folder.yaml").read_text())
    tpe = sweep["sampler_kwargs"]["tpe"]
    return {"learning_rate": sweep["params"]["model.learning_rate"], "reg": sweep["params"]["model.reg"],
            "n_startup_trials": tpe["n_startup_trials"], "multivariate": tpe["multivariate"],
            **{k: dataset[k] for k in ("validation_ratio", "split_seed", "subtract_mean", "bias_trick")}}


def _best_by_loss(names_values) -> dict:
    best = {}
    for name, value in names_values:
        loss = next((l for l in LOSSES if l in str(name)), str(name))
        best[loss] = value
    return best


def run_peer(python: str, loss: str, trials: int, iters: int, archive: Path, settings: dict, work: Path,
             sampler_seed: int = 0) -> dict:
    """One Hydra multirun of the peer (one study, ``trials`` jobs) for ``loss``."""
    pylib = work / "pylib"  # linear_models alone on the peer's path (see peer_app.py)
    if not pylib.exists():
        pylib.mkdir()
        (pylib / "linear_models").symlink_to(REPO / "linear_models")
    timings, sweep_dir = work / f"peer-{loss}-times.txt", work / f"peer-{loss}"
    s = settings
    cmd = [python, str(PEER_APP), "--multirun", f"loss={loss}", f"archive={archive}",
           f"mlflow_uri=sqlite:///{work}/peer-mlflow.db", f"num_iters={iters}", "batch_size=200", "seed=0",
           f"timings={timings}", f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_trials={trials}",
           f"learning_rate={s['learning_rate']}", f"reg={s['reg']}",
           f"hydra.sweeper.sampler.n_startup_trials={s['n_startup_trials']}",
           f"hydra.sweeper.sampler.multivariate={str(s['multivariate']).lower()}",
           f"hydra.sweeper.sampler.seed={sampler_seed}",
           *(f"{k}={str(s[k]).lower() if isinstance(s[k], bool) else s[k]}"
             for k in ("validation_ratio", "split_seed", "subtract_mean", "bias_trick"))]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=_clean_env(PYTHONPATH=str(pylib)), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the peer's {loss} sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    spans = [tuple(map(float, line.split())) for line in timings.read_text().splitlines()]
    return {"loss": loss, "wall_seconds": wall, "trials": len(spans), "best_val_acc": results["best_value"],
            "started_seconds": max(e for _, e in spans) - min(s_ for s_, _ in spans)}


def run_linear_sweep(trials: int, iters: int, archive: Path, work: Path, extra=(), sampler_seed: int = 0) -> dict:
    """``python -m sweeps --multirun loss=svm,softmax sweep=tpe``, as benchmarks/e2e_sweep.py runs it."""
    args = ["loss=svm,softmax", "sweep=tpe", f"hydra.sweeper.n_trials={trials}", f"model.num_iters={iters}",
            "model.batch_size=200", "dataset=image_folder", f"dataset.root={archive}",
            f"hydra.sweeper.seed={sampler_seed}", *extra]
    run = run_sweeps(args, work, work / "multirun", what="linear-sweep")
    studies = run["studies"]
    launches = [s["this_launch"] for s in studies]
    return {"tool": "linear-sweep", "command": " ".join(run["command"][1:]), "wall_seconds": run["wall_seconds"],
            "trials": 2 * trials,
            "started_seconds": max(l["ended_at"] for l in launches) - min(l["started_at"] for l in launches),
            "best_val_acc": _best_by_loss((s["study_name"], s.get("best_val_acc")) for s in studies)}


def one_round(python: str, args, settings: dict) -> dict:
    """The peer (svm, then softmax), then linear-sweep, each on fresh stores."""
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        work = Path(tmp)
        runs = []
        for loss in LOSSES:
            print(f"  peer, {loss}: {args.trials} trials ...", flush=True)
            runs.append(run_peer(python, loss, args.trials, args.iters, args.archive, settings, work,
                                 args.sampler_seed))
        peer = {"tool": "peer", "per_loss": runs, "wall_seconds": sum(r["wall_seconds"] for r in runs),
                "trials": sum(r["trials"] for r in runs), "started_seconds": sum(r["started_seconds"] for r in runs),
                "best_val_acc": {r["loss"]: r["best_val_acc"] for r in runs}}
        print(f"  linear-sweep: {args.trials} + {args.trials} trials ...", flush=True)
        (work / "ls").mkdir()
        ours = run_linear_sweep(args.trials, args.iters, args.archive, work / "ls", args.override, args.sampler_seed)
        variants = []
        for i, (name, overrides) in enumerate(args.variant):
            print(f"  linear-sweep [{name}]: {' '.join(overrides)} ...", flush=True)
            (work / f"ls-{i}").mkdir()
            variants.append(run_linear_sweep(args.trials, args.iters, args.archive, work / f"ls-{i}",
                                             [*args.override, *overrides], args.sampler_seed))
            variants[-1]["tool"] = f"ls [{name}]"
    for r in (peer, ours, *variants):
        r["per_trial_seconds"] = r["wall_seconds"] / r["trials"]
        r["started_per_trial_seconds"] = r["started_seconds"] / r["trials"]
    for r in (ours, *variants):
        r["ratio"] = peer["per_trial_seconds"] / r["per_trial_seconds"]
        r["ratio_once_started"] = peer["started_per_trial_seconds"] / r["started_per_trial_seconds"]
    return {"peer": peer, "linear_sweep": ours, "variants": variants,
            "ratio": ours["ratio"], "ratio_once_started": ours["ratio_once_started"]}


def parse_variant(text: str) -> tuple:
    """``NAME=KEY=VALUE [KEY=VALUE ...]`` -> (NAME, [KEY=VALUE, ...])."""
    name, _, overrides = text.partition("=")
    if not name or "=" not in overrides:
        raise argparse.ArgumentTypeError(f"--variant must be NAME=KEY=VALUE [KEY=VALUE ...], got {text!r}")
    return name, overrides.split()


def _acc(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def print_table(rounds: list) -> dict:
    """The side-by-side table, and the goal's verdict."""
    head = (f"{'round':>5}  {'tool':<12} {'wall s':>8} {'trials':>6} {'s/trial':>8} {'s/trial started':>15}"
            f"  {'best val svm':>12} {'best val softmax':>16}")
    print("\n" + head + "\n" + "-" * len(head))
    for i, r in enumerate(rounds, 1):
        for t in (r["peer"], r["linear_sweep"], *r.get("variants", ())):
            print(f"{i:>5}  {t['tool']:<12} {t['wall_seconds']:>8.1f} {t['trials']:>6} {t['per_trial_seconds']:>8.3f} "
                  f"{t['started_per_trial_seconds']:>15.3f}  {_acc(t['best_val_acc'].get('svm')):>12} "
                  f"{_acc(t['best_val_acc'].get('softmax')):>16}")
        for t in (r["linear_sweep"], *r.get("variants", ())):
            print(f"{i:>5}  {'ratio':<12} peer / {t['tool']} per trial: {t['ratio']:.1f}x end to end, "
                  f"{t['ratio_once_started']:.1f}x once started")
    ratios = [r["ratio"] for r in rounds]
    best_ok = all((r["linear_sweep"]["best_val_acc"].get(l) or 0) >= (r["peer"]["best_val_acc"].get(l) or 0)
                  for r in rounds for l in LOSSES)
    met = min(ratios) >= GOAL_RATIO and best_ok
    print(f"\nper trial, end to end: linear-sweep is {min(ratios):.1f}-{max(ratios):.1f}x faster than the peer "
          f"(goal >= {GOAL_RATIO:.0f}x); best val equal or better in both losses, every round: "
          f"{'yes' if best_ok else 'no'} -> goal {'met' if met else 'not met'}")
    return {"ratio_min": min(ratios), "ratio_max": max(ratios), "best_val_equal_or_better": best_ok, "goal_met": met}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per loss, for each tool")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=1500, help="SGD iterations per trial (fewer for smoke runs)")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--sampler-seed", type=int, default=0, help="both tools' TPE seed (best val moves with it)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peer's virtual environment")
    parser.add_argument("--rebuild-venv", action="store_true")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="more for linear-sweep")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant, metavar="NAME=KEY=VALUE ...",
                        help="also run linear-sweep with these overrides (e.g. 'pruned=hydra.sweeper.pruner=median'),"
                             " a row of its own; the goal is judged on the default run")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if not args.archive.exists():
        parser.error(f"--archive {args.archive}: not found (the CIFAR-10 JPEG archive, a .tar.gz of train/ and test/)")
    try:
        venv = ensure_venv(args.venv.resolve(), args.rebuild_venv)
    except PeerVenvError as e:
        sys.exit(f"benchmarks/peer.py: {e}")
    print("[peer venv] " + ", ".join(f"{k} {v}" for k, v in venv["versions"].items()), flush=True)
    settings = project_settings()
    args.archive = args.archive.resolve()
    rounds = []
    for i in range(args.rounds):
        print(f"\n[round {i + 1}/{args.rounds}] {args.trials} + {args.trials} trials, {args.iters} iterations, batch 200",
              flush=True)
        rounds.append(one_round(venv["python"], args, settings))
    result = {"trials_per_loss": args.trials, "iters": args.iters, "archive": str(args.archive), "settings": settings,
              "venv": venv, "rounds": rounds, "summary": print_table(rounds)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
