"""The batched trainer's in-place SGD step of K trials: W (D, K, C) <- W - lr * dW, fused.

Same update as ``W -= lr * dW`` with (loss, dW) from svm/softmax_loss_batched, rearranged
so that W is read by the first matmul and once for the regularization loss, and updated
inside the second matmul (no dW temporary):

    W <- (1 - 2 lr reg) * W - X^T @ (lr / N * dloss/dscores)

Pieces: the fast loss heads (no scatter / log_softmax, slow on CPU for C = 10), the
cache-blocked sum of squares for the L2 term and its workspace, and the deferred (fused)
weight decay, which keeps the decay factor in a per-trial ``scale`` between folds.
"""
from __future__ import annotations

from typing import Optional

import torch

from .losses import _label_index, _scores, _weight_grad

__all__ = ["_sgd_step_", "_step_workspace"]


# --------------------------------------------------------------------------- loss heads
def _svm_step_head(scores: torch.Tensor, index: torch.Tensor, one_hot: torch.Tensor):
    """Hinge loss summed over the batch (K,) and d loss / d scores (N, K, C); reuses ``scores``.

    scores (N, K, C), index (N, K, 1) true classes, one_hot (N, 1 or K, C). The true class's
    margin is exactly 1 (s_y - s_y + 1), so it is counted and subtracted instead of being
    zeroed; the gradient is finite even where scores are not.
    """
    N = scores.shape[0]
    margins = scores.sub_(scores.gather(2, index)).add_(1.0).clamp_(min=0.0)
    data_loss = margins.sum(dim=0).sum(dim=1) - N
    grad_scores = margins.gt_(0.0)  # 1 where the margin is positive, true class included
    # The true class gets 1 - (number of positive margins + 1).
    return data_loss, grad_scores.addcmul_(one_hot, grad_scores.sum(dim=2, keepdim=True), value=-1.0)


def _softmax_step_head(scores: torch.Tensor, index: torch.Tensor, one_hot: torch.Tensor):
    """Cross-entropy summed over the batch (K,) and d loss / d scores (N, K, C); reuses ``scores``."""
    shifted = scores.sub_(scores.amax(dim=2, keepdim=True))  # exp() cannot overflow
    probs = shifted.exp()
    norm = probs.sum(dim=2, keepdim=True)  # (N, K, 1)
    probs.div_(norm)
    data_loss = (norm.log_() - shifted.gather(2, index)).sum(dim=0).squeeze(1)  # log Z - s_y
    return data_loss, probs.sub_(one_hot)


_STEP_HEADS = {"svm": _svm_step_head, "softmax": _softmax_step_head}


def _step_head(loss, scores: torch.Tensor, index: torch.Tensor, one_hot: torch.Tensor):
    """The loss heads over scores (N, K, C): one loss name, or segments ((name, start, stop), ...)
    of the K trials; returns the data loss (K,) and d loss / d scores (N, K, C)."""
    if isinstance(loss, str):
        return _STEP_HEADS[loss](scores, index, one_hot)
    per_trial_y = one_hot.shape[1] > 1
    parts = [_STEP_HEADS[name](scores[:, a:b], index[:, a:b], one_hot[:, a:b] if per_trial_y else one_hot)
             for name, a, b in loss]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts], dim=1)


# --------------------------------------------------------------------------- L2 term
_SUM_SQ_BLOCK_BYTES = 1 << 20  # CPU: square W in row blocks whose accumulator stays in the cache


def _sum_squares(W2: torch.Tensor, K: int, work: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-trial ``sum(W * W)`` (K,) of W2 (D, K*C), reading W2 once.

    On the CPU, W2 * W2 is accumulated block by block into a cache-sized (rows, K*C) buffer
    (``work`` when large enough), then summed: about half the time of (W2 * W2).sum(0).
    """
    D, KC = W2.shape
    if W2.device.type != "cpu":
        return torch.linalg.vecdot(W2, W2, dim=0).view(K, -1).sum(dim=1)
    rows = max(1, min(D, _SUM_SQ_BLOCK_BYTES // (KC * W2.element_size())))
    if work is None or work.numel() < rows * KC:
        work = torch.empty(rows * KC, dtype=W2.dtype, device=W2.device)
    acc = torch.mul(W2[:rows], W2[:rows], out=work.view(-1)[: rows * KC].view(rows, KC))
    full = D // rows * rows
    for start in range(rows, full, rows):
        block = W2[start:start + rows]
        acc.addcmul_(block, block)
    total = acc.sum(dim=0)
    if full < D:
        total += torch.linalg.vecdot(W2[full:], W2[full:], dim=0)
    return total.view(K, -1).sum(dim=1)


def _step_workspace(K: int, C: int, like: torch.Tensor) -> torch.Tensor:
    """A scratch buffer big enough for _sum_squares / _sgd_step_ with up to K trials."""
    return torch.empty(max(_SUM_SQ_BLOCK_BYTES // like.element_size(), K * C), dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- the step
def _step_scores(X: torch.Tensor, W: torch.Tensor, matmul_dtype):
    """(X_mm, scores, matmul_dtype): scores (N, K, C) in W's dtype of X (N, D) or (K, N, D).

    X_mm is X in the matmul dtype (reused by the update; X may come in it already: the CUDA
    trainer gathers its minibatches from a bf16 copy of the data); matmul_dtype comes back None
    when it is W's own dtype, so the update takes the full-precision path.
    """
    if matmul_dtype is not None and matmul_dtype != W.dtype:
        X_mm, W_mm = X.to(matmul_dtype), W.to(matmul_dtype)
    else:
        X_mm, W_mm, matmul_dtype = X, W, None
    scores = _scores(X_mm, W_mm, None)  # (N, K, C)
    if matmul_dtype is not None:
        scores = scores.to(W.dtype)
    return X_mm, scores, matmul_dtype


def _true_class(y: torch.Tensor, N: int, K: int, C: int, like: torch.Tensor):
    """(index (N, K, 1), one_hot (N, 1, C), or (N, K, C) for per-trial labels y (K, N))."""
    index = _label_index(y, N, K)
    one_hot = torch.zeros(N, index.shape[1] if y.dim() == 2 else 1, C, dtype=like.dtype, device=like.device)
    one_hot.scatter_(2, index[:, : one_hot.shape[1]], 1.0)
    return index, one_hot


def _decay_weights_(W2: torch.Tensor, rate: torch.Tensor, reg: torch.Tensor, scale: Optional[torch.Tensor],
                    fold: bool, N: int, C: int) -> torch.Tensor:
    """Apply the weight decay 1 - 2 rate reg (K,) to W2 (D, K*C) or defer it into ``scale``.

    Returns the per-trial step size (K,) for the gradient term: rate / N, or rate / (N * scale)
    while the decay stays deferred (trial k's weights are then scale[k] * W[:, k, :]).
    """
    decay = 1.0 - 2.0 * rate * reg
    if scale is None:
        W2.mul_(decay.repeat_interleave(C))
        return rate / N
    if fold:
        W2.mul_((scale * decay).repeat_interleave(C))
        scale.fill_(1.0)
        return rate / N
    scale.mul_(decay)
    return rate / (N * scale)


def _low_precision_xt_g(X_mm: torch.Tensor, grad_scores: torch.Tensor) -> torch.Tensor:
    """X_mm^T @ grad_scores (D, K*C) for X_mm (N, D), grad_scores (N, K*C), both in the matmul dtype."""
    return X_mm.t() @ grad_scores


def _subtract_update_(W: torch.Tensor, X: torch.Tensor, X_mm: torch.Tensor, grad_scores: torch.Tensor,
                      matmul_dtype) -> None:
    """W (D, K, C) -= X^T @ grad_scores, grad_scores (N, K*C) already scaled by the step size."""
    D, K, C = W.shape
    W2 = W.view(D, K * C)
    if X.dim() == 2 and matmul_dtype is None:
        W2.addmm_(X.t(), grad_scores, alpha=-1.0)  # accumulate in the GEMM
    elif X.dim() == 2:
        W2.sub_(_low_precision_xt_g(X_mm, grad_scores.to(matmul_dtype)))
    else:
        N = grad_scores.shape[0]
        W.sub_(_weight_grad(X_mm, grad_scores.view(N, K, C).to(X_mm.dtype), None))


def _sgd_step_(loss, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
               lr: torch.Tensor, alive: torch.Tensor, *, scale: Optional[torch.Tensor] = None,
               fold: bool = True, matmul_dtype=None, work: Optional[torch.Tensor] = None,
               with_reg_loss: bool = True) -> torch.Tensor:
    """One SGD step of K trials in place (see the module docstring for the update).

    The weight decay factor is a full pass over W; with ``scale`` it is deferred: trial k's
    weights are ``scale[k] * W[:, k, :]`` and the factor goes into ``scale`` (K numbers),
    until a step with ``fold=True`` multiplies it into W and resets ``scale`` to 1. The
    caller folds before reading W and before ``scale`` could under- or overflow.

    Args:
        loss: "svm" or "softmax" for all K trials, or segments ((loss, start, stop), ...) of
            trials (columns start..stop-1 of W) with one loss each.
        W: (D, K, C) contiguous, updated in place.
        X: (N, D) shared minibatch and y (N,); or per-trial X (K, N, D), y (K, N).
        reg, lr: (K,) this step's L2 strengths and learning rates.
        alive: (K,) bool, updated in place: a trial whose loss is NaN/inf now or earlier
            keeps its weights (no host synchronisation).
        scale: optional (K,) weight scales, updated in place; None means 1 and fold=True.
        work: optional scratch buffer for the regularization loss, reused across steps.
        with_reg_loss: False skips the L2 term of the returned loss (a full pass over W);
            the update is the same, and a non-finite W still shows in the data loss.
    Returns: loss (K,) at the weights before the step (the data loss alone without the L2 term).
    """
    D, K, C = W.shape
    X_mm, scores, matmul_dtype = _step_scores(X, W, matmul_dtype)
    N = scores.shape[0]
    sum_sq = _sum_squares(W.view(D, K * C), K, work) if with_reg_loss else None
    if scale is not None:
        scores.mul_(scale.repeat_interleave(C).view(K, C))
        if sum_sq is not None:
            sum_sq.mul_(scale.square())
    data_loss, grad_scores = _step_head(loss, scores, *_true_class(y, N, K, C, W))
    loss_k = data_loss / N + reg * sum_sq if sum_sq is not None else data_loss / N
    alive &= torch.isfinite(loss_k)
    rate = torch.where(alive, lr, 0.0)  # (K,); 0 freezes a diverged trial
    step = _decay_weights_(W.view(D, K * C), rate, reg, scale, fold, N, C)
    # Fold the step size into the small (N, K*C) gradient ((K*C,) rows broadcast much faster
    # than (1, K, 1)); nan_to_num clears a diverged trial's NaN/inf.
    grad_scores = grad_scores.reshape(N, K * C).mul_(step.repeat_interleave(C)).nan_to_num_(0.0, 0.0, 0.0)
    _subtract_update_(W, X, X_mm, grad_scores, matmul_dtype)
    return loss_k
