"""What a launch costs before it trains: the seconds from starting `python -m sweeps` to the
first training step, on fresh stores and on existing ones (a relaunch that adds trials).

    python benchmarks/launch_cost.py                  # TPE (the default sweep), 3 relaunches
    python benchmarks/launch_cost.py --sampler random --relaunches 5 --json launch.json

In one temporary folder: a first launch on fresh SQLite stores, then ``--relaunches`` launches
that each add ``--trials`` trials to the same study, then one launch whose budget is already used.
For each it prints the time to the first training step (``first_train_at`` in the launch's
optimization_results.yaml, against the moment the process was started: interpreter start-up and
imports included) and the whole launch's wall time. The data cache is warmed by the first launch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from sweep_process import REPO, run_sweeps
DEFAULT_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def launch(work: Path, n_trials: int, sampler: str, archive: Path, index: int) -> dict:
    args = ["loss=softmax", f"sweep={sampler}", f"hydra.sweeper.n_trials={n_trials}", "model.num_iters=20",
            "eval_every=20", "dataset=image_folder", f"dataset.root={archive}"]
    run = run_sweeps(args, work, work / f"multirun-{index}", what=f"launch {index}")
    (study,) = run["studies"]
    first = study["this_launch"].get("first_train_at")
    return {"n_trials": n_trials, "wall_seconds": run["wall_seconds"],
            "to_first_step_seconds": None if first is None else first - run["start_at"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    parser.add_argument("--relaunches", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8, help="trials each launch adds")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="launch-") as tmp:
        work = Path(tmp)
        kinds = ["fresh stores"] + ["existing stores"] * args.relaunches + ["budget used"]
        for i, kind in enumerate(kinds):
            n = args.trials * min(i + 1, args.relaunches + 1)
            row = {"kind": kind, **launch(work, n, args.sampler, args.archive, i)}
            rows.append(row)
            first = row["to_first_step_seconds"]
            print(f"{kind:>16}: first training step after {'-' if first is None else f'{first:.2f} s':>7}, "
                  f"launch {row['wall_seconds']:.2f} s", flush=True)
    relaunches = [r["to_first_step_seconds"] for r in rows if r["kind"] == "existing stores"]
    result = {"sampler": args.sampler, "rows": rows}
    if relaunches:
        result["existing_stores_median_seconds"] = statistics.median(relaunches)
        print(f"existing stores, to the first training step: median {statistics.median(relaunches):.2f} s "
              f"(min {min(relaunches):.2f}, max {max(relaunches):.2f}) over {len(relaunches)} launches")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
