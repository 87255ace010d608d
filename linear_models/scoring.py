"""Predictions and accuracies of K stacked linear classifiers W (D, K, C), in chunks of X."""
from __future__ import annotations

import torch

__all__ = ["batched_predict", "batched_accuracy"]


@torch.no_grad()
def batched_predict(W: torch.Tensor, X: torch.Tensor, chunk: int = 8192, matmul_dtype=None) -> torch.Tensor:
    """Predicted labels of K classifiers: W (D, K, C), X (N, D) -> (N, K) int64 on W's device.

    matmul_dtype: e.g. torch.bfloat16 to score in the precision the trainer used (X may already
    be in it: evaluating one set repeatedly, convert it once).
    """
    D, K, C = W.shape
    W2 = _scoring_weights(W, matmul_dtype)
    return torch.cat([_class_scores(X[start:start + chunk], W2, matmul_dtype).view(-1, K, C).argmax(dim=2)
                      for start in range(0, X.shape[0], chunk)]) if X.shape[0] else \
        torch.empty(0, K, dtype=torch.long, device=W.device)


@torch.no_grad()
def batched_accuracy(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, chunk: int = 8192,
                     matmul_dtype=None) -> torch.Tensor:
    """Accuracy of each of K classifiers: W (D, K, C), X (N, D), y (N,) -> (K,) on W's device."""
    D, K, C = W.shape
    W2 = _scoring_weights(W, matmul_dtype)
    correct = torch.zeros(K, device=W.device, dtype=torch.float64)
    for start in range(0, X.shape[0], chunk):
        scores = _class_scores(X[start:start + chunk], W2, matmul_dtype).view(-1, K, C)
        correct += (scores.argmax(dim=2) == y[start:start + chunk, None]).sum(dim=0)
    return correct / max(X.shape[0], 1)


def _scoring_weights(W: torch.Tensor, matmul_dtype) -> torch.Tensor:
    """W (D, K, C) as the (D, K*C) right operand of the scores, in the matmul dtype (once per call)."""
    W2 = W.reshape(W.shape[0], -1)
    return W2 if matmul_dtype is None else W2.to(matmul_dtype)


def _class_scores(X: torch.Tensor, W2: torch.Tensor, matmul_dtype) -> torch.Tensor:
    """Scores (N, K*C) for argmax: left in the matmul dtype (converting back cannot change an
    argmax; bf16 -> float32 is exact)."""
    return X @ W2 if matmul_dtype is None else X.to(matmul_dtype) @ W2
