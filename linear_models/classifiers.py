"""Object API of the assignment: LinearClassifier, LinearSVM, Softmax."""
from __future__ import annotations

from pathlib import Path

import torch

from .losses import softmax_loss_vectorized, svm_loss_vectorized
from .train import predict_linear_classifier, train_linear_classifier

__all__ = ["LinearClassifier", "LinearSVM", "Softmax", "load_classifier"]


class LinearClassifier:
    """A linear classifier W (D, C); subclasses choose the loss.

    ``train`` accepts every keyword of :func:`train_linear_classifier` (seed, lr_schedule,
    callback, ...) and keeps training from the current W when called again.
    """

    loss_name: str = ""

    def __init__(self, W: torch.Tensor | None = None):
        self.W = W

    @staticmethod
    def loss_func(W, X_batch, y_batch, reg):  # pragma: no cover - overridden
        raise NotImplementedError

    def train(self, X_train, y_train, learning_rate=1e-3, reg=1e-5, num_iters=100,
              batch_size=200, verbose=False, **kwargs):
        """Train with SGD; returns the loss history (iterations run,)."""
        self.W, loss_history = train_linear_classifier(
            self.loss_func, self.W, X_train, y_train, learning_rate, reg, num_iters,
            batch_size, verbose, **kwargs)
        return loss_history

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """X (N, D) -> predicted labels (N,)."""
        if self.W is None:
            raise RuntimeError(f"{type(self).__name__} has no weights yet: call train() or load() first")
        return predict_linear_classifier(self.W, X)

    def loss(self, X_batch, y_batch, reg):
        """(loss, dW) of the current weights on a batch."""
        return self.loss_func(self.W, X_batch, y_batch, reg)

    def save(self, path) -> None:
        """Write the weights as plain tensors (loadable without executing code)."""
        if self.W is None:
            raise RuntimeError(f"{type(self).__name__} has no weights to save")
        # clone(): torch.save writes a view's whole storage (a trial cut from a stack of K would
        # write all K weight matrices).
        torch.save({"W": self.W.detach().cpu().clone(), "loss": self.loss_name}, Path(path))

    def load(self, path, device=None) -> "LinearClassifier":
        """Read weights saved by :meth:`save` (``weights_only=True``: refuses pickled code)."""
        state = torch.load(Path(path), map_location=device or "cpu", weights_only=True)
        if not isinstance(state, dict) or "W" not in state:
            raise ValueError(f"{path} does not hold saved linear-classifier weights (no 'W' entry)")
        if self.loss_name and state.get("loss") not in (None, self.loss_name):
            raise ValueError(f"{path} holds a {state['loss']!r} classifier, not {self.loss_name!r}")
        self.W = state["W"]
        return self


class LinearSVM(LinearClassifier):
    """Multiclass SVM (hinge loss, margin 1)."""

    loss_name = "svm"

    @staticmethod
    def loss_func(W, X_batch, y_batch, reg):
        return svm_loss_vectorized(W, X_batch, y_batch, reg)


class Softmax(LinearClassifier):
    """Softmax (cross-entropy) classifier."""

    loss_name = "softmax"

    @staticmethod
    def loss_func(W, X_batch, y_batch, reg):
        return softmax_loss_vectorized(W, X_batch, y_batch, reg)


_BY_LOSS = {"svm": LinearSVM, "softmax": Softmax}


def load_classifier(path, device=None) -> LinearClassifier:
    """Load a saved classifier as the right class (LinearSVM or Softmax)."""
    state = torch.load(Path(path), map_location=device or "cpu", weights_only=True)
    cls = _BY_LOSS.get(state.get("loss") if isinstance(state, dict) else None, LinearClassifier)
    return cls().load(path, device)


def classifier_for_loss(loss: str) -> type:
    """LinearSVM for "svm", Softmax for "softmax"."""
    try:
        return _BY_LOSS[loss]
    except KeyError:
        raise ValueError(f"loss must be one of ['softmax', 'svm'], got {loss!r}") from None
