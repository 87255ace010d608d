"""End to end: a real ``python -m sweeps --multirun loss=svm,softmax`` sweep of ``--e2e-trials``
trials per loss on the CIFAR-10 JPEG copy (fresh SQLite stores in a temporary folder, tracking
and artifacts included), timed from the command's start to its exit, with the training /
tracking / bookkeeping split the sweeper writes to optimization_results.yaml.

The ``--e2e`` / ``--e2e-only`` part of sweep_throughput.py (its flags are parsed there).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Optional
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from matmul_peak import flop_per_trial, measure_peak  # noqa: E402

E2E_GOAL_SECONDS, E2E_GOAL_PEAK = 30.0, 200.0  # the 100-trial sweep's goal, and the peak it assumes
DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def e2e_section(trials: int, iters: int, sampler: str, archive: Path, peak_gflops: float, extra=(),
                code: Optional[Path] = None) -> dict:
    """Run a whole sweep as a user would and time it (see the module docstring). ``code``: the
    checkout to run (default: this one), for A/B runs against another version."""
    import subprocess
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="e2e-") as work:
        cmd = [sys.executable, "-m", "sweeps", "--multirun", "loss=svm,softmax", f"sweep={sampler}",
               f"hydra.sweeper.n_trials={trials}", f"model.num_iters={iters}", "dataset=image_folder",
               f"dataset.root={archive}", "hydra.sweeper.progress_bar=false", f"hydra.sweep.dir={work}/multirun",
               *extra]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
               "PYTHONPATH": str(code or Path(__file__).resolve().parents[1])}
        start, start_at = time.perf_counter(), time.time()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"sweep failed:\n{proc.stderr[-3000:]}")
        studies = yaml.safe_load((Path(work) / "multirun" / "optimization_results.yaml").read_text())["studies"]
    split = {k: sum(s_["this_launch"][k] for s_ in studies)
             for k in ("wall_seconds", "train_seconds", "tracking_seconds", "bookkeeping_seconds", "finalize_seconds")}
    tflop = 2 * trials * flop_per_trial(iters) / 1e12
    result = {"command": " ".join(cmd[1:]), "trials": 2 * trials, "iters": iters, "sampler": sampler,
              "wall_seconds": wall, "tflop": tflop, "floor_seconds_at_peak": tflop * 1e3 / peak_gflops,
              "batch_sizes": [s_["this_launch"]["batch_size"] for s_ in studies], "studies_split": split,
              "best_val_acc": {s_["study_name"]: s_.get("best_val_acc") for s_ in studies}}
    # Studies overlap (one records while the next trains): place them on the launch's time line.
    startup = min(s_["this_launch"]["started_at"] for s_ in studies) - start_at
    last_report_end = max(s_["this_launch"]["ended_at"] for s_ in studies) - start_at
    last_trained = max(s_["this_launch"]["trained_at"] for s_ in studies) - start_at
    result.update(startup_seconds=startup, exit_seconds=wall - last_report_end,
                  after_training_seconds=wall - last_trained)
    print(f"\n[end to end] {2 * trials} trials ({trials} svm + {trials} softmax, {sampler}, {iters} iterations, "
          f"batches of {result['batch_sizes']}): {wall:.1f} s from start to exit")
    print(f"  training work {tflop:.2f} TFLOP: {result['floor_seconds_at_peak']:.1f} s at the measured peak; "
          f"training took {split['train_seconds']:.1f} s ({tflop * 1e3 / max(split['train_seconds'], 1e-9):.0f} GFLOP/s)")
    print(f"  start-up (imports, data from cache, stores) {startup:.1f} s | studies {last_report_end - startup:.1f} s: "
          f"training {split['train_seconds']:.1f} s, recording {split['tracking_seconds']:.1f} s and study reports "
          f"{split['finalize_seconds']:.1f} s (background thread, overlapping training), bookkeeping "
          f"{split['bookkeeping_seconds']:.1f} s | exit {result['exit_seconds']:.1f} s")
    print(f"  after the last batch trained: {result['after_training_seconds']:.1f} s (its recording, tells, "
          f"the last study's report, exit)")
    tracking = split["tracking_seconds"] + split["finalize_seconds"] + split["bookkeeping_seconds"]
    result["tracking_share"] = tracking / wall
    print(f"  tracking and bookkeeping (MLflow runs, metrics, artifacts, reports; Optuna asks and tells): "
          f"{tracking:.1f} s of thread time = {100 * tracking / wall:.0f}% of the wall time, mostly beside training; "
          f"on the critical path: the {result['after_training_seconds']:.1f} s after the last batch")
    # The goal: 30 s on a machine whose float32 peak is 200 GFLOP/s. This machine's peak
    # moves with its neighbours' load: scale by the mean of the peaks measured before and after.
    after = measure_peak(torch.float32, torch.device("cpu"), repeats=3)["gflops"]
    around = (peak_gflops + after) / 2
    goal = E2E_GOAL_SECONDS * E2E_GOAL_PEAK / around
    result.update(peak_after_gflops=after, goal_seconds=goal, goal_met=wall <= goal)
    print(f"  goal: {E2E_GOAL_SECONDS:.0f} s at a {E2E_GOAL_PEAK:.0f} GFLOP/s peak; measured peak {peak_gflops:.0f} before, "
          f"{after:.0f} after the sweep -> {goal:.1f} s here: {'met' if wall <= goal else 'not met'} "
          f"({wall / goal:.2f}x the goal)")
    return result


def e2e_runs(args, iters: int, peak_gflops: float) -> dict:
    """The end-to-end sweep, and with --e2e-bf16 the same sweep with bf16 matmuls beside it."""
    run = lambda *extra: e2e_section(args.e2e_trials, iters, args.e2e_sampler, args.archive, peak_gflops,
                                     [*args.e2e_override, *extra])
    if not args.e2e_bf16:
        from sweeps.data import cpu_has_native_bf16

        print(f"\n[end to end] default model.matmul_dtype=auto: "
              f"{'bfloat16' if cpu_has_native_bf16() else 'float32'} matmuls on this CPU")
        return run()
    result = run("model.matmul_dtype=null")
    bf16 = run("model.matmul_dtype=bfloat16")
    result["bfloat16"] = bf16
    print(f"\n[end to end] float32 {result['wall_seconds']:.1f} s vs bf16 matmuls {bf16['wall_seconds']:.1f} s "
          f"({result['wall_seconds'] / bf16['wall_seconds']:.2f}x); training {result['studies_split']['train_seconds']:.1f} s vs "
          f"{bf16['studies_split']['train_seconds']:.1f} s; best val " + ", ".join(
              f"{name}: {acc:.4f} vs {bf16['best_val_acc'][name]:.4f}" for name, acc in result["best_val_acc"].items()))
    return result


def e2e_against(args, iters: int, peak_gflops: float) -> dict:
    """The same sweep by this checkout and by each ``--against`` checkout, interleaved per round
    (A, B, A, B: a shared machine's load drifts), with the walls side by side."""
    codes = [Path(__file__).resolve().parents[1], *[Path(c).resolve() for c in args.against]]
    walls: Dict[str, List[float]] = {str(c): [] for c in codes}
    best: Dict[str, dict] = {}
    for _ in range(args.rounds):
        for code in codes:
            print(f"\n[end to end] code: {code}")
            r = e2e_section(args.e2e_trials, iters, args.e2e_sampler, args.archive, peak_gflops, args.e2e_override, code)
            walls[str(code)].append(r["wall_seconds"])
            best[str(code)] = r["best_val_acc"]
    print("\n[end to end, interleaved] wall seconds per round, and the ratio to this checkout")
    mine = walls[str(codes[0])]
    for code, w in walls.items():
        ratios = " ".join(f"{a / b:.2f}x" for a, b in zip(w, mine))
        print(f"  {code}: {' '.join(f'{x:.1f}' for x in w)} s | vs this checkout {ratios} | best val {best[code]}")
    return {"walls": walls, "best_val_acc": best}


def e2e_only(args, iters: int, dtype: torch.dtype, results: dict) -> dict:
    """``--e2e-only``: the CPU peak, then the sweep (against other checkouts with --against)."""
    peak = measure_peak(dtype, torch.device("cpu"), repeats=5)
    print(f"\n[cpu] measured {args.dtype} matmul peak: {peak['gflops']:.1f} GFLOP/s")
    results["e2e"] = (e2e_against(args, iters, peak["gflops"]) if args.against
                      else e2e_runs(args, iters, peak["gflops"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def e2e_after_devices(args, iters: int, dtype: torch.dtype, results: dict) -> None:
    """``--e2e``: the sweep after the device sections, against the CPU peak they measured."""
    cpu_peak = results["devices"].get("cpu", {}).get("peak", {}).get("gflops") or measure_peak(dtype, torch.device("cpu"))["gflops"]
    results["e2e"] = e2e_runs(args, iters, cpu_peak)
