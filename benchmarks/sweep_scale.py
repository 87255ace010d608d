"""What a sweep costs per trial beyond training, as it grows: 100, 1,000 and 10,000 trials.

    python benchmarks/sweep_scale.py                       # random sampler, N = 100, 1000, 10000
    python benchmarks/sweep_scale.py --skip-10k --sampler tpe
    python benchmarks/sweep_scale.py --ns 100 1000 --json scale.json

Each run is a real `python -m sweeps --multirun` (softmax, CIFAR-10 JPEG copy, fresh SQLite stores,
every artifact the README promises) with training made nearly free (``model.num_iters=20
eval_every=20``), so what is left is the engine: asks, MLflow run creation, recording (metrics,
config, templates, weights), tells, the study report. It prints, per N: the wall time, the
training time, the per-trial overhead ``(wall - start-up - training) / N`` and its breakdown
from the launch's own figures (``this_launch`` in optimization_results.yaml), and the 10k/1k
(or largest/1k) ratio of the per-trial overhead, plus what the stores hold per trial on disk.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from sweep_process import REPO, run_sweeps
DEFAULT_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
PHASES = ("ask_seconds", "create_run_seconds", "tracking_seconds", "tell_seconds", "finalize_seconds")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sampler_overrides(sampler: str, n: int) -> list:
    """The sweep preset for ``sampler``; for grid, a log-spaced lr x reg grid of at least ``n`` points."""
    if sampler in ("random", "tpe"):
        return [f"sweep={sampler}"]
    if sampler != "grid":
        return ["sweep=random", f"hydra.sweeper.sampler={sampler}"]
    a = math.ceil(math.sqrt(n))
    b = math.ceil(n / a)

    def choice(low: float, high: float, k: int) -> str:
        return "choice(" + ",".join(f"{10 ** (low + (high - low) * i / max(1, k - 1)):.6g}" for i in range(k)) + ")"

    # Quoted: the sweeper reads the string; unquoted, Hydra would take choice() as its own sweep.
    return ["sweep=grid", f"hydra.sweeper.params={{model.learning_rate:'{choice(-4, -1, a)}',"
                          f"model.reg:'{choice(-5, 0, b)}'}}"]


def run_once(n: int, sampler: str, archive: Path, extra, keep: Path = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = str(keep / f"{sampler}-{n}") if keep else tmp
        Path(work).mkdir(parents=True, exist_ok=True)
        args = ["loss=softmax", *sampler_overrides(sampler, n), f"hydra.sweeper.n_trials={n}", "model.num_iters=20",
                "eval_every=20", "dataset=image_folder", f"dataset.root={archive}", *extra]
        run = run_sweeps(args, Path(work), Path(work) / "multirun", what=f"sweep of {n} trials")
        start_at, wall = run["start_at"], run["wall_seconds"]
        (study,) = run["studies"]
        launch = study["this_launch"]
        disk = folder_bytes(Path(work) / "mlartifacts") + sum(
            (Path(work) / f).stat().st_size for f in ("mlflow.db", "optuna.db") if (Path(work) / f).exists())
    startup = launch["started_at"] - start_at
    train = launch["train_seconds"]
    overhead = (wall - startup - train) / n
    return {"n": n, "sampler": sampler, "wall_seconds": wall, "startup_seconds": startup, "train_seconds": train,
            "overhead_ms_per_trial": 1e3 * overhead, "bytes_per_trial": disk / n, "best_val_acc": study.get("best_val_acc"),
            "phases_ms_per_trial": {p: 1e3 * launch.get(p, float("nan")) / n for p in PHASES}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--skip-10k", action="store_true", help="leave out N = 10,000")
    parser.add_argument("--sampler", default="random", choices=["random", "qmc", "grid", "tpe", "cmaes", "gp"])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each sweep's stores in DIR/<sampler>-<N> (e.g. to time linear-compare on them)")
    args = parser.parse_args(argv)
    ns = [n for n in args.ns if not (args.skip_10k and n >= 10000)]
    rows = []
    for n in ns:
        row = run_once(n, args.sampler, args.archive, args.override, args.keep)
        rows.append(row)
        phases = ", ".join(f"{k.replace('_seconds', '')} {v:.1f}" for k, v in row["phases_ms_per_trial"].items())
        print(f"N={n:>6} {args.sampler}: wall {row['wall_seconds']:.1f} s (start-up {row['startup_seconds']:.1f} s, "
              f"training {row['train_seconds']:.1f} s) -> overhead {row['overhead_ms_per_trial']:.1f} ms/trial "
              f"[thread time per trial, ms: {phases}]; {row['bytes_per_trial'] / 1024:.0f} KiB/trial on disk",
              flush=True)
    by_n = {r["n"]: r for r in rows}
    result = {"rows": rows}
    if 1000 in by_n and max(by_n) > 1000:
        ratio = by_n[max(by_n)]["overhead_ms_per_trial"] / by_n[1000]["overhead_ms_per_trial"]
        result["ratio_to_1k"] = ratio
        print(f"per-trial overhead at N={max(by_n)} / at N=1000: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
