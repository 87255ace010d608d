"""What work beside the trainer costs it: the batched trainer (K = 26, bf16 products where the CPU
has them, 1,500 steps, random data of CIFAR-10's shape) alone, then beside a thread and beside a
process that each compute ``--duty`` of every 20 ms, at the default priority and at nice 19.
Interleaved rounds; prints each round's ratios to the trainer alone.

    python benchmarks/beside_trainer.py [--rounds 3] [--steps 1500]

On a 2-core machine a busy process slows the step as much as a busy thread (docs/overhead.md).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # run from a checkout
import linear_models as lm  # noqa: E402
from sweeps.data import cpu_has_native_bf16  # noqa: E402

PERIOD = 0.020
MODES = ("thread", "thread, nice 19", "process", "process, nice 19")


def busy(stop, duty: float, nice: int, per_thread: bool) -> None:
    """Compute ``duty`` seconds of Python in every PERIOD until ``stop`` is set."""
    if nice:
        who = threading.get_native_id() if per_thread else 0  # Linux: a thread id names that thread
        os.setpriority(os.PRIO_PROCESS, who, nice)
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duty:
            sum(i * i for i in range(200))
        time.sleep(PERIOD - duty)


def train_seconds(data, steps: int) -> float:
    X, y, Xv, yv = data
    K = 26
    t0 = time.perf_counter()
    lm.train_linear_classifiers_batched(["svm"] * 13 + ["softmax"] * 13, X, y, [1e-3] * K, [1e-4] * K, steps, 200,
                                        X_val=Xv, y_val=yv, eval_every=250, seed=0,
                                        matmul_dtype=torch.bfloat16 if cpu_has_native_bf16() else None)
    return time.perf_counter() - t0


def beside(mode: str, duty: float, data, steps: int) -> float:
    nice = 19 if "nice" in mode else 0
    if mode.startswith("thread"):
        stop = threading.Event()
        worker = threading.Thread(target=busy, args=(stop, duty, nice, True))
    else:
        stop = mp.get_context("spawn").Event()
        worker = mp.get_context("spawn").Process(target=busy, args=(stop, duty, nice, False))
    worker.start()
    time.sleep(0.5)  # a spawned process imports first
    try:
        return train_seconds(data, steps)
    finally:
        stop.set()
        worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--duty", type=float, default=0.008, help="busy seconds in every 20 ms")
    args = parser.parse_args()
    sys.setswitchinterval(1e-4)  # as the sweep sets it
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(49000, 3073, generator=g), torch.randint(0, 10, (49000,), generator=g),
            torch.randn(1000, 3073, generator=g), torch.randint(0, 10, (1000,), generator=g))
    print(f"trainer alone and beside {args.duty * 1e3:.0f} ms of Python in every 20 ms; ratio to alone")
    print("round  alone s  " + "  ".join(f"{m:>16}" for m in MODES))
    for r in range(args.rounds):
        alone = train_seconds(data, args.steps)
        ratios = [beside(m, args.duty, data, args.steps) / alone for m in MODES]
        print(f"{r:>5}  {alone:7.2f}  " + "  ".join(f"{x:15.2f}x" for x in ratios), flush=True)


if __name__ == "__main__":
    main()
