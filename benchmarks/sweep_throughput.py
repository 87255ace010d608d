"""Sweep throughput: how many training trials per second, and how close to the matmul peak.

    python benchmarks/sweep_throughput.py                  # float32, CPU (+ CUDA when present)
    python benchmarks/sweep_throughput.py --quick          # 150 iterations, fewer repeats
    python benchmarks/sweep_throughput.py --dtype float64 --device cpu --json out.json
    python benchmarks/sweep_throughput.py --matmul-dtype bfloat16   # batched trainer's bf16 matmuls

Trainer level (this file so far): K trials of the assignment's problem (batch 200, N = 40,000,
D = 3073, C = 10) trained either one after another with train_linear_classifier
("sequential") or together with train_linear_classifiers_batched ("batched"). Useful work per
trial is the two matmuls of every SGD step, 2*B*D*C flops each:

    FLOP per trial = 4 * batch * D * C * iterations

and achieved GFLOP/s is reported as a percentage of the machine's measured matmul peak for
the dtype (best of a few large GEMMs).

End to end (``--e2e``, in e2e_sweep.py): a real ``python -m sweeps --multirun loss=svm,softmax`` sweep of
``--e2e-trials`` trials per loss on the CIFAR-10 JPEG copy (fresh SQLite stores in a temporary
folder, tracking and artifacts included), timed from the command's start to its exit, with the
training / tracking / bookkeeping split the sweeper writes to optimization_results.yaml.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import linear_models as lm  # noqa: E402

from e2e_sweep import DEFAULT_ARCHIVE, e2e_after_devices, e2e_only  # noqa: E402
from matmul_peak import BATCH, C, D, N_TRAIN, flop_per_trial, measure_peak, timed  # noqa: E402

KS = (1, 8, 32, 64, 128)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MATMUL_DTYPES = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- trainers
def make_data(dtype: torch.dtype, device: torch.device, seed: int = 0):
    """Random data of CIFAR-10's shape and scale after preprocessing (values in [-0.5, 0.5],
    bias column of ones): the trainers' speed does not depend on the pixel values."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(N_TRAIN, D, generator=gen, dtype=dtype).sub_(0.5)
    X[:, -1] = 1.0
    y = torch.randint(C, (N_TRAIN,), generator=gen)
    return X.to(device), y.to(device)


def trial_grid(K: int):
    """K (learning rate, reg) pairs spread log-uniformly over a range where SGD is stable."""
    if K == 1:
        return [3e-3], [1e-2]
    lrs = [1e-3 * 10 ** (i / (K - 1)) for i in range(K)]
    regs = [1e-4 * 10 ** (3 * ((i * 7) % K) / (K - 1)) for i in range(K)]
    return lrs, regs


def time_batched(loss, X, y, K, iters, matmul_dtype, repeats) -> list:
    """Seconds of ``repeats`` batched runs of K trials."""
    lrs, regs = trial_grid(K)
    run = lambda: lm.train_linear_classifiers_batched(  # noqa: E731
        loss, X, y, lrs, regs, iters, BATCH, seed=0, matmul_dtype=matmul_dtype)
    return [timed(run, X.device) for _ in range(repeats)]


def time_sequential_runs(loss, X, y, count, iters) -> list:
    """Seconds of ``count`` separate train_linear_classifier runs (one per trial)."""
    loss_func = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}[loss]
    lrs, regs = trial_grid(max(count, 2))
    return [timed(lambda: lm.train_linear_classifier(loss_func, None, X, y, lrs[i], regs[i], iters, BATCH, seed=i),
                  X.device) for i in range(count)]


def trainer_section(loss: str, dtype: torch.dtype, device: torch.device, *, iters: int, Ks=KS,
                    seq_runs: int = 3, repeats: int = 1, matmul_dtype=None, peak: float) -> list:
    """Rows of trials/s and GFLOP/s, sequential vs batched, for each K."""
    X, y = make_data(dtype, device)
    # Warm-up (first-call allocations, thread pool start).
    lm.train_linear_classifiers_batched(loss, X, y, [1e-3], [1e-3], 5, BATCH, seed=0, matmul_dtype=matmul_dtype)
    seq_times: list = []  # per-trial seconds, timed once and reused: a trial's cost does not depend on K
    rows = []
    flop = flop_per_trial(iters)
    for K in Ks:
        need = min(K, seq_runs)
        if len(seq_times) < need:
            seq_times += time_sequential_runs(loss, X, y, need - len(seq_times), iters)
        # Best (shortest) times: on a shared machine, load only ever adds time.
        t_seq = K * min(seq_times[:need])
        bat_times = time_batched(loss, X, y, K, iters, matmul_dtype, repeats)
        t_bat = min(bat_times)
        rows.append({
            "K": K,
            "sequential_s": t_seq,
            "sequential_median_s": K * statistics.median(seq_times[:need]),
            "sequential_timed_runs": need,
            "sequential_extrapolated": need < K,
            "batched_s": t_bat,
            "batched_median_s": statistics.median(bat_times),
            "sequential_trials_per_s": K / t_seq,
            "batched_trials_per_s": K / t_bat,
            "sequential_gflops": K * flop / t_seq / 1e9,
            "batched_gflops": K * flop / t_bat / 1e9,
            "sequential_pct_peak": 100 * K * flop / t_seq / 1e9 / peak,
            "batched_pct_peak": 100 * K * flop / t_bat / 1e9 / peak,
            "speedup": t_seq / t_bat,
        })
    return rows


def print_rows(rows: list) -> None:
    print(f"  {'K':>4s} {'seq trials/s':>13s} {'seq GFLOP/s':>12s} {'seq %peak':>10s}   "
          f"{'bat trials/s':>13s} {'bat GFLOP/s':>12s} {'bat %peak':>10s} {'speed-up':>9s}")
    for r in rows:
        note = f"  (sequential: {r['sequential_timed_runs']} runs timed, x{r['K']} extrapolated)" \
            if r["sequential_extrapolated"] else ""
        print(f"  {r['K']:4d} {r['sequential_trials_per_s']:13.3f} {r['sequential_gflops']:12.1f} "
              f"{r['sequential_pct_peak']:9.1f}%   {r['batched_trials_per_s']:13.3f} {r['batched_gflops']:12.1f} "
              f"{r['batched_pct_peak']:9.1f}% {r['speedup']:8.1f}x{note}")


# --------------------------------------------------------------------------- bf16 accuracy
def load_cifar10(dtype: torch.dtype, device: torch.device):
    """Real CIFAR-10 (train/val split of linear_models.data.preprocess), or None if unavailable."""
    archive = Path("/work/shared/datasets/cifar10-jpeg.tar.gz")
    try:
        from linear_models import data
        raw = data.load_image_folder(archive)
        return data.preprocess(raw, validation_ratio=0.2, bias_trick=True, dtype=dtype, device=device, seed=0)
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back to synthetic data
        print(f"  (CIFAR-10 not loadable: {type(exc).__name__}: {exc}; using synthetic separable data)")
        return None


def synthetic_separable(dtype: torch.dtype, device: torch.device):
    """Gaussian class clusters of CIFAR's shape: a learnable stand-in when CIFAR is missing."""
    gen = torch.Generator().manual_seed(0)
    centers = 0.05 * torch.randn(C, D - 1, generator=gen, dtype=dtype)
    out = {}
    for split, n in (("train", N_TRAIN), ("val", 10000)):
        y = torch.randint(C, (n,), generator=gen)
        X = centers[y] + 0.3 * torch.randn(n, D - 1, generator=gen, dtype=dtype)
        out[f"X_{split}"] = torch.cat([X, torch.ones(n, 1, dtype=dtype)], dim=1).to(device)
        out[f"y_{split}"] = y.to(device)
    return out


def bf16_accuracy_section(loss: str, device: torch.device, *, iters: int, matmul_dtype=torch.bfloat16) -> dict:
    """Validation accuracy and time of the batched trainer with float32 vs ``matmul_dtype`` matmuls."""
    ds = load_cifar10(torch.float32, device)
    source = "CIFAR-10" if ds is not None else "synthetic clusters"
    ds = ds or synthetic_separable(torch.float32, device)
    lrs = [1e-3, 3e-3, 1e-2, 3e-2] * 2
    regs = [1e-3] * 4 + [1e-1] * 4
    out = {"data": source, "lrs": lrs, "regs": regs}
    for name, mdt in (("float32", None), (str(matmul_dtype).split(".")[-1], matmul_dtype)):
        holder = {}
        seconds = timed(lambda: holder.setdefault("res", lm.train_linear_classifiers_batched(
            loss, ds["X_train"], ds["y_train"], lrs, regs, iters, BATCH, seed=0, matmul_dtype=mdt)), device)
        res = holder["res"]
        acc = lm.batched_accuracy(res.W.permute(1, 0, 2), ds["X_val"], ds["y_val"]).tolist()
        out[name] = {"seconds": seconds, "val_acc": acc, "status": res.status}
    low = str(matmul_dtype).split(".")[-1]
    diffs = [a - b for a, b in zip(out[low]["val_acc"], out["float32"]["val_acc"])]
    out["max_abs_acc_diff"] = max(abs(d) for d in diffs)
    out["speedup"] = out["float32"]["seconds"] / out[low]["seconds"]
    print(f"\n[{device}] {low} matmuls vs float32, batched {loss}, K={len(lrs)}, {iters} iterations, {source}:")
    print(f"  time: float32 {out['float32']['seconds']:.2f} s, {low} {out[low]['seconds']:.2f} s "
          f"(speed-up {out['speedup']:.2f}x)")
    for k, (lr, reg) in enumerate(zip(lrs, regs)):
        print(f"  lr={lr:g} reg={reg:g}: val acc float32 {out['float32']['val_acc'][k]:.4f}  "
              f"{low} {out[low]['val_acc'][k]:.4f}  ({diffs[k]:+.4f})")
    print(f"  max |accuracy difference| = {out['max_abs_acc_diff']:.4f}")
    return out


# --------------------------------------------------------------------------- main
def devices_for(choice: str) -> list:
    if choice == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return [torch.device(choice)]


def parse_args(argv=None):
    """The flags, and the resolved iteration count (``--iters``, else 1500, or 150 with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 150 iterations, K up to 64, fewer repeats")
    parser.add_argument("--iters", type=int, default=None, help="SGD iterations per trial (default 1500; 150 with --quick)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA when present")
    parser.add_argument("--loss", choices=["svm", "softmax"], default="softmax")
    parser.add_argument("--matmul-dtype", choices=sorted(MATMUL_DTYPES), default="none",
                        help="lower-precision matmuls in the batched trainer (e.g. bfloat16)")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help=f"numbers of trials (default {' '.join(map(str, KS))})")
    parser.add_argument("--bf16-accuracy", action="store_true",
                        help="also compare validation accuracy and time of bf16 vs float32 matmuls "
                             "(CIFAR-10 through linear_models.data when available)")
    parser.add_argument("--e2e", action="store_true", help="also time a whole sweep end to end (see above)")
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end sweep (and the CPU peak)")
    parser.add_argument("--e2e-trials", type=int, default=50, help="trials per loss in the end-to-end sweep")
    parser.add_argument("--e2e-sampler", default="random", choices=["random", "tpe", "grid"])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="CIFAR-10 JPEG archive for --e2e")
    parser.add_argument("--e2e-override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for the end-to-end sweep, e.g. seed=1 (repeatable)")
    parser.add_argument("--e2e-bf16", action="store_true",
                        help="run the end-to-end sweep twice, model.matmul_dtype=null (float32) and bfloat16, side by side "
                             "(without it: once, with the default matmul_dtype=auto)")
    parser.add_argument("--against", action="append", default=[], metavar="DIR",
                        help="with --e2e-only: also run the sweep from this checkout (e.g. a git worktree of an "
                             "older commit), interleaved with this one (repeatable)")
    parser.add_argument("--rounds", type=int, default=2, help="with --against: interleaved rounds (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    iters = args.iters or (150 if args.quick else 1500)
    if iters < 1:
        parser.error(f"--iters must be >= 1, got {iters}")
    return args, iters


def header(args, iters: int) -> dict:
    """The run's settings (the start of the results), printed."""
    results: dict = {
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "dtype": args.dtype, "matmul_dtype": args.matmul_dtype, "loss": args.loss, "iters": iters,
        "batch": BATCH, "N": N_TRAIN, "D": D, "C": C, "flop_per_trial": flop_per_trial(iters), "devices": {},
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{args.loss}, {args.dtype}, matmul dtype {args.matmul_dtype}")
    print(f"FLOP per trial = 4 * batch * D * C * iterations = 4 * {BATCH} * {D} * {C} * {iters} "
          f"= {flop_per_trial(iters) / 1e9:.2f} GFLOP (the two matmuls of each step)")
    return results


def device_section(args, device: torch.device, iters: int) -> dict:
    """One device: its matmul peak, the trainers' rows, the peak again, and (--bf16-accuracy) bf16 vs float32."""
    Ks = args.ks or ([k for k in KS if k <= 64] if args.quick else KS)
    dtype = DTYPES[args.dtype]
    peak = measure_peak(dtype, device, repeats=3 if args.quick else 5)
    print(f"\n[{device}] measured {args.dtype} matmul peak: {peak['gflops']:.1f} GFLOP/s  ("
          + ", ".join(f"{k} {v:.1f}" for k, v in peak["per_shape"].items()) + ")")
    rows = trainer_section(args.loss, dtype, device, iters=iters, Ks=Ks, seq_runs=2 if args.quick else 3,
                           repeats=1 if args.quick else 2, matmul_dtype=MATMUL_DTYPES[args.matmul_dtype],
                           peak=peak["gflops"])
    print_rows(rows)
    after = measure_peak(dtype, device, repeats=3)
    print(f"  times: best of {1 if args.quick else 2} batched runs; sequential = K x best of the timed runs. "
          f"Peak re-measured afterwards: {after['gflops']:.1f} GFLOP/s (load on a shared machine lowers both)")
    peak["after_gflops"] = after["gflops"]
    section = {"peak": peak, "trainer": rows}
    if args.bf16_accuracy:
        section["bf16_accuracy"] = bf16_accuracy_section(args.loss, device, iters=iters)
    return section


def main(argv=None) -> dict:
    args, iters = parse_args(argv)
    results = header(args, iters)
    if args.e2e_only:
        return e2e_only(args, iters, DTYPES[args.dtype], results)
    for device in devices_for(args.device):
        results["devices"][str(device)] = device_section(args, device, iters)
    if args.e2e:
        e2e_after_devices(args, iters, DTYPES[args.dtype], results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
