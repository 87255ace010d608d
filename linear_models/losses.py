"""Multiclass SVM (hinge, margin 1) and softmax losses with analytic gradients.

Conventions follow the EECS 498-007 / CS231n assignment:
W (D, C), X (N, D), y (N,) int64; data loss averaged over the batch; regularization
``reg * sum(W * W)`` (no 1/2, so its gradient is ``2 * reg * W``).

The vectorized losses are the K = 1 case of the *batched* kernels, which evaluate K weight
matrices stacked as W (D, K, C) against one shared minibatch with two matrix products:
``scores = X @ W.view(D, K*C)`` and ``dW = X.T @ G``. The batched trainer uses them directly.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = [
    "svm_loss_naive",
    "svm_loss_vectorized",
    "softmax_loss_naive",
    "softmax_loss_vectorized",
    "svm_loss_batched",
    "softmax_loss_batched",
    "batched_loss_function",
]


# --------------------------------------------------------------------------- naive (loops)
def svm_loss_naive(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float):
    """Structured SVM loss with explicit loops over examples and classes.

    Args: W (D, C), X (N, D), y (N,) int64, reg float.
    Returns: (loss scalar tensor, dW (D, C)).
    """
    dW = torch.zeros_like(W)
    num_classes = W.shape[1]
    num_train = X.shape[0]
    loss = W.new_zeros(())
    for i in range(num_train):
        scores = W.t().mv(X[i])
        label = int(y[i])
        correct_class_score = scores[label]
        for j in range(num_classes):
            if j == label:
                continue
            margin = scores[j] - correct_class_score + 1  # note delta = 1
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, label] -= X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * torch.sum(W * W)
    dW += 2 * reg * W
    return loss, dW


def softmax_loss_naive(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float):
    """Softmax (cross-entropy) loss with explicit loops; numerically stable.

    Args: W (D, C), X (N, D), y (N,) int64, reg float.
    Returns: (loss scalar tensor, dW (D, C)).
    """
    dW = torch.zeros_like(W)
    num_classes = W.shape[1]
    num_train = X.shape[0]
    loss = W.new_zeros(())
    for i in range(num_train):
        scores = W.t().mv(X[i])
        scores = scores - scores.max()  # shift so exp() cannot overflow
        log_sum_exp = torch.log(torch.exp(scores).sum())
        label = int(y[i])
        loss += log_sum_exp - scores[label]
        for j in range(num_classes):
            p_j = torch.exp(scores[j] - log_sum_exp)
            dW[:, j] += (p_j - (1.0 if j == label else 0.0)) * X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * torch.sum(W * W)
    dW += 2 * reg * W
    return loss, dW


# --------------------------------------------------------------------------- batched kernels
def _as_reg(reg, K: int, like: torch.Tensor) -> torch.Tensor:
    """reg as a (K,) tensor on W's device and dtype (a float or a length-K sequence/tensor)."""
    reg_t = torch.as_tensor(reg, dtype=like.dtype, device=like.device)
    return reg_t.expand(K) if reg_t.dim() == 0 else reg_t


def svm_loss_batched(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg, *, matmul_dtype=None):
    """SVM loss and gradient for K weight matrices at once.

    Args:
        W: (D, K, C) contiguous; trial k's weights are W[:, k, :].
        X: (N, D) minibatch shared by all K trials, y: (N,) int64; or per-trial minibatches
            X (K, N, D), y (K, N).
        reg: float or (K,) tensor of L2 strengths.
        matmul_dtype: optional lower precision (e.g. torch.bfloat16) for the two matmuls only.
    Returns: (loss (K,), dW (D, K, C)).
    """
    return _loss_and_grad(_svm_head, W, X, y, reg, matmul_dtype)


def softmax_loss_batched(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg, *, matmul_dtype=None):
    """Softmax loss and gradient for K weight matrices at once (shapes as svm_loss_batched).

    Stable for large scores: uses log-softmax, so scores of 1e4 give no NaN/inf.
    """
    return _loss_and_grad(_softmax_head, W, X, y, reg, matmul_dtype)


def _svm_head(scores: torch.Tensor, index: torch.Tensor):
    """Hinge loss summed over the batch (K,) and d loss / d scores (N, K, C); reuses ``scores``."""
    correct = scores.gather(2, index)  # (N, K, 1)
    margins = scores.sub_(correct).add_(1.0).clamp_(min=0.0)
    margins.scatter_(2, index, 0.0)
    # d loss / d scores: +1 for every positive margin, minus their count at the true class.
    grad_scores = (margins > 0).to(scores.dtype)
    grad_scores.scatter_(2, index, -grad_scores.sum(dim=2, keepdim=True))
    return margins.sum(dim=(0, 2)), grad_scores


def _softmax_head(scores: torch.Tensor, index: torch.Tensor):
    """Cross-entropy summed over the batch (K,) and d loss / d scores (N, K, C)."""
    log_probs = torch.log_softmax(scores, dim=2)
    data_loss = -log_probs.gather(2, index).squeeze(2).sum(dim=0)
    grad_scores = log_probs.exp_()
    grad_scores.scatter_add_(2, index, grad_scores.new_full((*index.shape[:2], 1), -1.0))
    return data_loss, grad_scores


def _loss_and_grad(head, W, X, y, reg, matmul_dtype):
    scores = _scores(X, W, matmul_dtype)  # (N, K, C)
    N, K, C = scores.shape
    data_loss, grad_scores = head(scores, _label_index(y, N, K))
    if isinstance(reg, (int, float)):  # a plain number (the K = 1 kernels): fewer small ops
        reg_k, two_reg = reg, 2 * reg
    else:
        reg_k = _as_reg(reg, K, W)
        # (K, C) layout: the broadcast over W runs along contiguous memory (much faster than
        # a (1, K, 1) broadcast); the values are the same.
        two_reg = (2 * reg_k).view(K, 1).expand(K, C).contiguous()
    loss = data_loss / N + reg_k * (W * W).sum(dim=(0, 2))
    dW = _weight_grad(X, grad_scores, matmul_dtype)
    dW.div_(N).add_(W * two_reg)
    return loss, dW


# The trainer's step uses its own heads: same math as _svm_head / _softmax_head, but without
# scatter and log_softmax, which are slow on CPU when each row has only C = 10 classes.
def _svm_step_head(scores: torch.Tensor, index: torch.Tensor, one_hot: torch.Tensor):
    """Hinge loss summed over the batch (K,) and d loss / d scores (N, K, C); reuses ``scores``.

    The true class's margin is exactly 1 (s_y - s_y + 1), so it is counted and subtracted
    instead of being zeroed; the gradient is finite even where scores are not.
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


def _sgd_step_(loss, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
               lr: torch.Tensor, alive: torch.Tensor, *, scale: Optional[torch.Tensor] = None,
               fold: bool = True, matmul_dtype=None, work: Optional[torch.Tensor] = None,
               with_reg_loss: bool = True) -> torch.Tensor:
    """One SGD step of K trials in place; the batched trainer's inner loop.

    The same update as ``W -= lr * dW`` with (loss, dW) from svm/softmax_loss_batched, but
    rearranged so that W (D, K, C) is read by the first matmul and once for the
    regularization loss, and updated inside the second matmul (no dW temporary):

        W <- (1 - 2 lr reg) * W - X^T @ (lr / N * dloss/dscores)

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
    W2 = W.view(D, K * C)
    if matmul_dtype is not None and matmul_dtype != X.dtype:
        X_mm, W_mm = X.to(matmul_dtype), W.to(matmul_dtype)
    else:
        X_mm, W_mm, matmul_dtype = X, W, None
    scores = _scores(X_mm, W_mm, None)  # (N, K, C)
    if matmul_dtype is not None:
        scores = scores.to(W.dtype)
    N = scores.shape[0]
    sum_sq = _sum_squares(W2, K, work) if with_reg_loss else None
    if scale is not None:
        scores.mul_(scale.repeat_interleave(C).view(K, C))
        if sum_sq is not None:
            sum_sq.mul_(scale.square())
    index = _label_index(y, N, K)
    one_hot = torch.zeros(N, index.shape[1] if y.dim() == 2 else 1, C, dtype=W.dtype, device=W.device)
    one_hot.scatter_(2, index[:, : one_hot.shape[1]], 1.0)  # (N, 1, C) or per trial (N, K, C)
    data_loss, grad_scores = _step_head(loss, scores, index, one_hot)
    loss_k = data_loss / N + reg * sum_sq if sum_sq is not None else data_loss / N
    alive &= torch.isfinite(loss_k)
    rate = torch.where(alive, lr, 0.0)  # (K,); 0 freezes a diverged trial
    decay = 1.0 - 2.0 * rate * reg
    if scale is None:
        W2.mul_(decay.repeat_interleave(C))
        step = rate / N
    elif fold:
        W2.mul_((scale * decay).repeat_interleave(C))
        scale.fill_(1.0)
        step = rate / N
    else:
        scale.mul_(decay)
        step = rate / (N * scale)
    # Fold the step size into the small (N, K*C) gradient ((K*C,) rows broadcast much faster
    # than (1, K, 1)); nan_to_num clears a diverged trial's NaN/inf.
    grad_scores = grad_scores.reshape(N, K * C).mul_(step.repeat_interleave(C)).nan_to_num_(0.0, 0.0, 0.0)
    if X.dim() == 2 and matmul_dtype is None:
        W2.addmm_(X.t(), grad_scores, alpha=-1.0)  # accumulate in the GEMM
    elif X.dim() == 2:
        # Low-precision CPU matmuls take a transposed operand slowly: transpose the batch first.
        W2.sub_(X_mm.t().contiguous() @ grad_scores.to(matmul_dtype))
    else:
        W.sub_(_weight_grad(X_mm, grad_scores.view(N, K, C).to(X_mm.dtype), None))
    return loss_k


def _scores(X: torch.Tensor, W: torch.Tensor, matmul_dtype) -> torch.Tensor:
    """Scores (N, K, C) for a shared batch X (N, D), or per-trial batches X (K, N, D)."""
    D, K, C = W.shape
    if X.dim() == 2:
        return _matmul(X, W.reshape(D, K * C), matmul_dtype).view(X.shape[0], K, C)
    return _matmul(X, W.permute(1, 0, 2), matmul_dtype).permute(1, 0, 2)


def _weight_grad(X: torch.Tensor, grad_scores: torch.Tensor, matmul_dtype) -> torch.Tensor:
    """X^T @ grad_scores per trial: grad_scores (N, K, C) -> (D, K, C)."""
    N, K, C = grad_scores.shape
    if X.dim() == 2:
        return _matmul(X.t(), grad_scores.reshape(N, K * C), matmul_dtype).view(X.shape[1], K, C)
    return _matmul(X.transpose(1, 2), grad_scores.permute(1, 0, 2), matmul_dtype).permute(1, 0, 2)


def _label_index(y: torch.Tensor, N: int, K: int) -> torch.Tensor:
    """Gather/scatter index (N, K, 1) of the true class, from y (N,) or per-trial y (K, N)."""
    if y.dim() == 1:
        return y.view(N, 1, 1).expand(N, K, 1)
    return y.t().unsqueeze(2)


def _matmul(a: torch.Tensor, b: torch.Tensor, matmul_dtype) -> torch.Tensor:
    if matmul_dtype is None or matmul_dtype == a.dtype:
        return a @ b
    return (a.to(matmul_dtype) @ b.to(matmul_dtype)).to(a.dtype)


_BATCHED = {"svm": svm_loss_batched, "softmax": softmax_loss_batched}


def batched_loss_function(loss: str):
    """The batched kernel for a loss name: "svm" or "softmax"."""
    try:
        return _BATCHED[loss]
    except KeyError:
        raise ValueError(f"loss must be one of ['softmax', 'svm'], got {loss!r}") from None


# --------------------------------------------------------------------------- vectorized (K = 1)
def svm_loss_vectorized(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float):
    """Structured SVM loss, no loops. W (D, C), X (N, D), y (N,) -> (loss scalar, dW (D, C))."""
    loss, dW = svm_loss_batched(W.unsqueeze(1), X, y, reg)
    return loss[0], dW.squeeze(1)


def softmax_loss_vectorized(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float):
    """Softmax loss, no loops. W (D, C), X (N, D), y (N,) -> (loss scalar, dW (D, C))."""
    loss, dW = softmax_loss_batched(W.unsqueeze(1), X, y, reg)
    return loss[0], dW.squeeze(1)
