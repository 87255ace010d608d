"""Multiclass SVM (hinge, margin 1) and softmax losses with analytic gradients.

Conventions follow the EECS 498-007 / CS231n assignment:
W (D, C), X (N, D), y (N,) int64; data loss averaged over the batch; regularization
``reg * sum(W * W)`` (no 1/2, so its gradient is ``2 * reg * W``).

The vectorized losses are the K = 1 case of the *batched* kernels, which evaluate K weight
matrices stacked as W (D, K, C) against one shared minibatch with two matrix products:
``scores = X @ W.view(D, K*C)`` and ``dW = X.T @ G``. The batched trainer's fused in-place
step (linear_models.sgd_step) computes the same update with its own faster loss heads.
"""
from __future__ import annotations

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
