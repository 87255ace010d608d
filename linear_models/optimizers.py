"""Optimizers of the batched trainer beyond plain SGD: heavy-ball / Nesterov momentum and
Polyak-Ruppert iterate averaging (averaged SGD), each batched over K stacked trials.

    sgd       W <- W - lr g                                   (linear_models.sgd_step, fused)
    momentum  v <- mu v + g;  W <- W - lr v                   (PyTorch's SGD(momentum=mu))
    nesterov  v <- mu v + g;  W <- W - lr (g + mu v)          (PyTorch's SGD(nesterov=True))
    asgd      the SGD iterates, and their running mean from step floor(start * num_iters) on;
              the averaged weights are what is validated and returned (Polyak & Juditsky 1992)

with g = dloss/dW including the L2 term 2 reg W. mu and the start fraction are per trial.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ._validation import check_int
from .losses import _weight_grad
from .sgd_step import _low_precision_xt_g, _step_head, _step_scores, _sum_squares, _true_class

__all__ = ["OPTIMIZERS", "MOMENTUM_OPTIMIZERS", "check_optimizer", "momentum_step_", "average_weight_table"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "asgd")
MOMENTUM_OPTIMIZERS = ("momentum", "nesterov")


def check_optimizer(name, momentum: Sequence[float], average_start: Sequence[float]) -> str:
    """Check the optimizer name and its per-trial values; the message names the parameter."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    for mu in momentum:
        if not (isinstance(mu, (int, float)) and 0 <= mu < 1):
            raise ValueError(f"momentum must be in [0, 1), got {mu!r}")
    for start in average_start:
        if not (isinstance(start, (int, float)) and 0 <= start < 1):
            raise ValueError(f"average_start must be in [0, 1), got {start!r}")
    return name


def average_weight_table(iters: Sequence[int], average_start: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """weights (T, K): after step t, A <- lerp(A, W, weights[t, k]) keeps A the running mean.

    Trial k averages the iterates after steps s..t, s = floor(average_start[k] * iters[k]):
    weight 1 up to step s (A follows W exactly), then 1 / (t - s + 1).
    """
    T = max(iters)
    table = torch.ones(T, len(iters), dtype=torch.float64)
    steps = torch.arange(T, dtype=torch.float64)
    for k, (n, a) in enumerate(zip(iters, average_start)):
        s = min(int(math.floor(a * check_int("num_iters", n))), n - 1)
        table[s:, k] = 1.0 / (steps[s:] - s + 1.0)
    return table.to(device=like.device, dtype=like.dtype)


def _data_gradient(X: torch.Tensor, X_mm: torch.Tensor, grad_scores: torch.Tensor, matmul_dtype,
                   out: Optional[torch.Tensor]) -> torch.Tensor:
    """X^T @ grad_scores as (D, K*C) in grad_scores' dtype; X (N, D) shared or (K, N, D)."""
    N, KC = grad_scores.shape
    if X.dim() == 2 and matmul_dtype is None:
        return torch.mm(X.t(), grad_scores, out=out)
    if X.dim() == 2:
        return _low_precision_xt_g(X_mm, grad_scores.to(matmul_dtype)).to(grad_scores.dtype)
    K = X.shape[0]
    grad = _weight_grad(X_mm, grad_scores.view(N, K, KC // K).to(X_mm.dtype), None)
    return grad.reshape(X.shape[2], KC).to(grad_scores.dtype)


def momentum_step_(loss, W: torch.Tensor, V: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
                   lr: torch.Tensor, momentum: torch.Tensor, nesterov: bool, alive: torch.Tensor, *,
                   matmul_dtype=None, work: Optional[torch.Tensor] = None, with_reg_loss: bool = True,
                   grad_out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One momentum (or Nesterov) step of K trials in place.

    Args:
        loss: "svm" | "softmax", or segments ((loss, start, stop), ...), as in sgd_step._sgd_step_.
        W, V: (D, K, C) weights and velocities, contiguous, updated in place.
        X: (N, D) shared minibatch, y (N,); or per-trial X (K, N, D), y (K, N).
        reg, lr, momentum: (K,) L2 strengths, this step's learning rates, momentum factors.
        alive: (K,) bool, updated in place; a trial whose loss is non-finite keeps its weights.
        grad_out: optional (D, K*C) buffer for the gradient, reused across steps.
    Returns: loss (K,) at the weights before the step (the data loss alone without the L2 term).
    """
    D, K, C = W.shape
    W2, V2 = W.view(D, K * C), V.view(D, K * C)
    X_mm, scores, matmul_dtype = _step_scores(X, W, matmul_dtype)
    N = scores.shape[0]
    sum_sq = _sum_squares(W2, K, work) if with_reg_loss else None
    data_loss, grad_scores = _step_head(loss, scores, *_true_class(y, N, K, C, W))
    loss_k = data_loss / N + reg * sum_sq if sum_sq is not None else data_loss / N
    alive &= torch.isfinite(loss_k)
    grad_scores = grad_scores.reshape(N, K * C).div_(N).nan_to_num_(0.0, 0.0, 0.0)
    if grad_out is not None and grad_out.shape != (D, K * C):
        grad_out = None
    grad = _data_gradient(X, X_mm, grad_scores, matmul_dtype, grad_out)
    grad.addcmul_(W2, (2.0 * reg).repeat_interleave(C))  # + d(reg ||W||^2)/dW
    mu = momentum.repeat_interleave(C)
    V2.mul_(mu).add_(grad)
    update = grad.addcmul_(V2, mu) if nesterov else V2
    rate = torch.where(alive, lr, 0.0).repeat_interleave(C)  # 0 freezes a diverged trial
    W2.addcmul_(update, rate, value=-1.0)
    return loss_k
