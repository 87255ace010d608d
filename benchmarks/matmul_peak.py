"""The problem's shape, its FLOP count per trial, and the machine's measured matmul peak: shared by
sweep_throughput.py (trainer level) and e2e_sweep.py (a whole sweep)."""
from __future__ import annotations

import time

import torch

N_TRAIN, D, C, BATCH = 40000, 3073, 10, 200


def flop_per_trial(iters: int, batch: int = BATCH, dim: int = D, classes: int = C) -> int:
    """Two (batch x dim x classes) matmuls per SGD step, 2 flops per multiply-add."""
    return 4 * batch * dim * classes * iters


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Wall seconds of one call, with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> dict:
    """GFLOP/s of large-ish GEMMs (best of ``repeats``); the peak is the best shape."""
    shapes = [(BATCH, D, 128 * C), (D, BATCH, 128 * C), (2048, 2048, 2048)]  # (m, k, n)
    per_shape = {}
    for m, k, n in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
        b = torch.randn(k, n, dtype=dtype, device=device, generator=gen)
        timed(lambda: a @ b, device)  # warm-up
        best = min(timed(lambda: a @ b, device) for _ in range(repeats))
        per_shape[f"({m}x{k})@({k}x{n})"] = 2 * m * k * n / best / 1e9
    return {"gflops": max(per_shape.values()), "per_shape": per_shape}
