"""Numerical gradient checks (centered differences), as in the assignment."""
from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["grad_check_sparse", "rel_error"]


def rel_error(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> float:
    """max |x - y| / max(|x| + |y|, eps), elementwise then max."""
    top = (x - y).abs()
    bot = (x.abs() + y.abs()).clamp(min=eps)
    return (top / bot).max().item()


@torch.no_grad()
def grad_check_sparse(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      analytic_grad: torch.Tensor, num_checks: int = 10, h: float = 1e-7,
                      generator: Optional[torch.Generator] = None, verbose: bool = True) -> float:
    """Compare ``analytic_grad`` with centered differences at ``num_checks`` random entries.

    Args: f maps x (any shape) to a scalar; x and analytic_grad have the same shape.
    Returns the largest relative error seen. Use float64 and h ~ 1e-7 for errors < 1e-5.
    """
    worst = 0.0
    flat = x.view(-1)
    grad_flat = analytic_grad.reshape(-1)
    for _ in range(num_checks):
        ix = int(torch.randint(flat.numel(), (1,), generator=generator))
        old = flat[ix].item()
        flat[ix] = old + h
        fxph = float(f(x))
        flat[ix] = old - h
        fxmh = float(f(x))
        flat[ix] = old
        numeric = (fxph - fxmh) / (2 * h)
        analytic = float(grad_flat[ix])
        denom = abs(numeric) + abs(analytic)
        err = abs(numeric - analytic) / denom if denom > 0 else 0.0
        worst = max(worst, err)
        if verbose:
            print(f"numerical: {numeric:f} analytic: {analytic:f}, relative error: {err:e}")
    return worst
