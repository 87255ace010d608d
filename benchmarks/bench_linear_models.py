"""Speed of the linear_models kernels and trainer, each beside what it should be compared to.

    python benchmarks/bench_linear_models.py            # full run, about 2 minutes on 2 cores
    python benchmarks/bench_linear_models.py --quick    # smoke run, a few seconds
    python benchmarks/bench_linear_models.py --json out.json

Sections, printed as ratios in one run:
  (a) naive (loops over examples and classes, as in the assignment) vs vectorized loss+gradient,
      both losses, on 500 CIFAR-shaped examples (D = 3073, C = 10);
  (b) the vectorized loss+gradient vs the two matrix products it cannot avoid,
      X @ W (500, 3073) @ (3073, 10) and X.T @ G (3073, 500) @ (500, 10); goal: within 2x;
  (c) seconds per training run (1,500 iterations of batch 200, N = 40,000) in float32 and
      float64: train_linear_classifier vs a bare loop of the same math written here;
      goal: the library within 10%.

Data: random numbers of CIFAR-10's shape and scale after preprocessing (pixels / 255 minus
the mean, so values in [-0.5, 0.5], plus the bias column of ones); ``--data cifar10`` uses
the real archive through linear_models.data instead. Timings are medians of repeated runs
(torch.utils.benchmark for the short ones); the machine may be shared, so repeat a run
before trusting a difference of a few percent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import linear_models as lm  # noqa: E402

D, C, BATCH = 3073, 10, 200
CIFAR_ARCHIVE = Path("/work/shared/datasets/cifar10-jpeg.tar.gz")


# --------------------------------------------------------------------------- data
def random_cifar_like(num: int, dtype: torch.dtype, seed: int = 0):
    """X (num, 3073) uniform in [-0.5, 0.5) with a ones column, y (num,) in [0, 10)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(num, D, generator=gen, dtype=dtype).sub_(0.5)
    X[:, -1] = 1.0
    return X, torch.randint(C, (num,), generator=gen)


def load_data(kind: str, num: int, dtype: torch.dtype):
    """(X, y, description) with num training rows: random CIFAR-shaped data or real CIFAR-10."""
    if kind == "random":
        X, y = random_cifar_like(num, dtype)
        return X, y, "random data of CIFAR-10's shape and scale"
    from linear_models import data  # the real loader; fails loudly if missing

    raw = data.load_image_folder(CIFAR_ARCHIVE)
    ds = data.preprocess(raw, validation_ratio=0.2, bias_trick=True, dtype=dtype, seed=0)
    X, y = ds["X_train"][:num].contiguous(), ds["y_train"][:num].contiguous()
    return X, y, f"CIFAR-10 from {CIFAR_ARCHIVE} (first {X.shape[0]} training rows)"


# --------------------------------------------------------------------------- timing helpers
def median_time(fn, *, min_run_time: float) -> float:
    """Median seconds per call of fn (torch.utils.benchmark, blocked autorange)."""
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def median_of_calls(fn, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of a long-running fn."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- (a) and (b)
def bench_kernels(X: torch.Tensor, y: torch.Tensor, *, quick: bool) -> dict:
    """Naive vs vectorized, and vectorized vs its two bare matmuls, for both losses."""
    N = X.shape[0]
    W = 1e-4 * torch.randn(D, C, dtype=X.dtype, generator=torch.Generator().manual_seed(1))
    G = torch.randn(N, C, dtype=X.dtype, generator=torch.Generator().manual_seed(2))
    reg = 1e-3
    run_time = 0.1 if quick else 0.3
    # Rounds alternate between the functions, so a burst of load on a shared machine hits
    # them alike; each figure is the median over rounds of blocked_autorange medians.
    fns = {"scores": lambda: X @ W, "grad": lambda: X.t() @ G,
           "svm": lambda: lm.svm_loss_vectorized(W, X, y, reg),
           "softmax": lambda: lm.softmax_loss_vectorized(W, X, y, reg)}
    rounds: dict = {name: [] for name in fns}
    for _ in range(2 if quick else 5):
        for name, fn in fns.items():
            rounds[name].append(median_time(fn, min_run_time=run_time))
    med = {name: statistics.median(times) for name, times in rounds.items()}
    t_scores, t_grad = med["scores"], med["grad"]
    out = {"N": N, "matmul_X_W_s": t_scores, "matmul_Xt_G_s": t_grad}
    for name, naive in (("svm", lm.svm_loss_naive), ("softmax", lm.softmax_loss_naive)):
        t_naive = median_of_calls(lambda: naive(W, X, y, reg), 1 if quick else 3)
        t_vec = med[name]
        out[name] = {
            "naive_s": t_naive,
            "vectorized_s": t_vec,
            "speedup_naive_over_vectorized": t_naive / t_vec,
            "vectorized_over_two_matmuls": t_vec / (t_scores + t_grad),
        }
    return out


# --------------------------------------------------------------------------- (c)
def bare_training_loop(loss: str, W, X, y, learning_rate, reg, num_iters, batch_size, generator):
    """The assignment's SGD loop with the loss written inline: the floor for the library."""
    num_train = X.shape[0]
    history = torch.empty(num_iters, dtype=X.dtype)
    for it in range(num_iters):
        idx = torch.randint(num_train, (batch_size,), generator=generator)
        X_batch, y_batch = X.index_select(0, idx), y.index_select(0, idx)
        label = y_batch.view(-1, 1)
        scores = X_batch @ W  # (B, C)
        if loss == "svm":
            margins = (scores - scores.gather(1, label) + 1).clamp_(min=0).scatter_(1, label, 0.0)
            data_loss = margins.sum() / batch_size
            grad_scores = (margins > 0).to(X.dtype)
            grad_scores.scatter_(1, label, -grad_scores.sum(1, keepdim=True))
        else:
            log_probs = scores.log_softmax(dim=1)
            data_loss = -log_probs.gather(1, label).sum() / batch_size
            grad_scores = log_probs.exp_().scatter_add_(1, label, torch.full_like(label, -1, dtype=X.dtype))
        history[it] = data_loss + reg * (W * W).sum()
        dW = X_batch.t() @ grad_scores / batch_size + 2 * reg * W
        W -= learning_rate * dW
    return W, history


def bench_training(loss: str, X, y, *, num_iters: int, repeats: int) -> dict:
    """Seconds per run: train_linear_classifier vs the bare loop (same data, lr, reg, batches)."""
    loss_func = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}[loss]
    lr, reg = 1e-3, 1e-2
    W0 = 1e-6 * torch.randn(D, C, dtype=X.dtype, generator=torch.Generator().manual_seed(3))
    runs = {
        "library": lambda iters: lm.train_linear_classifier(loss_func, W0.clone(), X, y, lr, reg, iters, BATCH,
                                                            generator=torch.Generator().manual_seed(4)),
        "bare": lambda iters: bare_training_loop(loss, W0.clone(), X, y, lr, reg, iters, BATCH,
                                                 torch.Generator().manual_seed(4)),
    }
    for run in runs.values():
        run(20)  # warm-up
    times: dict = {"library": [], "bare": []}
    for r in range(repeats):  # interleaved (alternating order), so drifting load hits both alike
        for kind in (("library", "bare") if r % 2 == 0 else ("bare", "library")):
            start = time.perf_counter()
            runs[kind](num_iters)
            times[kind].append(time.perf_counter() - start)
    lib, bare = statistics.median(times["library"]), statistics.median(times["bare"])
    return {"library_s": lib, "bare_s": bare, "library_over_bare": lib / bare, "num_iters": num_iters}


# --------------------------------------------------------------------------- main
def machine_info() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run (fewer iterations and repeats)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--data", choices=["random", "cifar10"], default="random",
                        help="random CIFAR-shaped data (default) or the real archive via linear_models.data")
    args = parser.parse_args(argv)

    info = machine_info()
    print(f"torch {info['torch']}, {info['torch_threads']} intra-op threads "
          f"({info['torch_interop_threads']} inter-op), {info['cpu_count']} CPUs, {info['cpu_capability']}")
    results: dict = {"machine": info, "quick": args.quick}

    # (a) + (b)
    X, y, source = load_data(args.data, 500, torch.float32)
    print(f"\n(a, b) loss + gradient on {X.shape[0]} examples, D={D}, C={C}, float32; {source}")
    kernels = bench_kernels(X, y, quick=args.quick)
    results["kernels"] = {"data": source, "dtype": "float32", **kernels}
    print(f"  bare matmuls: X@W {kernels['matmul_X_W_s'] * 1e3:.3f} ms + X.T@G {kernels['matmul_Xt_G_s'] * 1e3:.3f} ms")
    print(f"  {'loss':8s} {'naive ms':>10s} {'vector ms':>10s} {'naive/vec':>10s} {'vec/matmuls (goal <= 2)':>24s}")
    for name in ("svm", "softmax"):
        r = kernels[name]
        print(f"  {name:8s} {r['naive_s'] * 1e3:10.1f} {r['vectorized_s'] * 1e3:10.3f} "
              f"{r['speedup_naive_over_vectorized']:9.0f}x {r['vectorized_over_two_matmuls']:23.2f}x")

    # (c)
    num_iters = 150 if args.quick else 1500
    repeats = 1 if args.quick else 3
    print(f"\n(c) seconds per training run: {num_iters} iterations, batch {BATCH}, N=40000, D={D}, C={C}; "
          f"median of {repeats} (goal: library/bare <= 1.10)")
    print(f"  {'dtype':8s} {'loss':8s} {'library s':>10s} {'bare s':>10s} {'library/bare':>13s}")
    results["training"] = {}
    for dtype in (torch.float32, torch.float64):
        X, y, source = load_data(args.data, 40000, dtype)
        for loss in ("svm", "softmax"):
            r = bench_training(loss, X, y, num_iters=num_iters, repeats=repeats)
            results["training"][f"{loss}_{str(dtype).split('.')[-1]}"] = {"data": source, **r}
            print(f"  {str(dtype).split('.')[-1]:8s} {loss:8s} {r['library_s']:10.3f} {r['bare_s']:10.3f} "
                  f"{r['library_over_bare']:13.3f}")
        del X, y
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
