"""Minibatch SGD for one linear classifier, prediction and accuracy.

Names and defaults follow the EECS 498-007 / CS231n assignment; additions (seed, callback,
learning-rate schedule, divergence check) are keyword-only so assignment code keeps working.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._validation import check_choice, check_int, check_nonnegative, check_positive, check_weights_data
from .rng import _draw_device, make_generator, random_indices, to_device

__all__ = [
    "TrainingDivergedError",
    "sample_batch",
    "make_generator",
    "init_weights",
    "lr_schedule_factors",
    "LR_SCHEDULES",
    "train_linear_classifier",
    "predict_linear_classifier",
    "accuracy",
]

LR_SCHEDULES = ("none", "step", "cosine")


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or inf; carries the iteration and the loss value."""

    def __init__(self, iteration: int, loss: float, learning_rate: float | None = None):
        self.iteration = iteration
        self.loss = loss
        hint = f" (learning_rate={learning_rate:g} is probably too large)" if learning_rate else ""
        super().__init__(f"training diverged: loss is {loss} at iteration {iteration}{hint}")


def sample_batch(X: torch.Tensor, y: torch.Tensor, num_train: int, batch_size: int,
                 generator: Optional[torch.Generator] = None):
    """Sample ``batch_size`` examples with replacement.

    Args: X (N, D), y (N,), num_train = N, batch_size B.
    Returns: X_batch (B, D), y_batch (B,) on X's device. The indices are drawn on the generator's
    device (the CPU for linear_models.make_generator), so a seed gives the same batches everywhere.
    """
    idx = random_indices(num_train, (batch_size,), X.device, generator)
    return X.index_select(0, idx), y.index_select(0, idx)  # same as X[idx], about 3x faster on CPU


def init_weights(dim: int, num_classes: int, *, like: torch.Tensor, scale: float = 1e-6,
                 generator: Optional[torch.Generator] = None, num_trials: Optional[int] = None):
    """``scale * randn`` weights, (D, C) or (D, K, C) when ``num_trials`` = K, on like's device/dtype
    (drawn on the generator's device, see linear_models.rng)."""
    shape = (dim, num_classes) if num_trials is None else (dim, num_trials, num_classes)
    return to_device(scale * torch.randn(shape, device=_draw_device(generator), dtype=like.dtype,
                                         generator=generator), like.device)


def lr_schedule_factors(schedule: str, num_iters: int, *, step_every: Optional[int] = None,
                        gamma: float = 0.5, device=None, dtype=torch.float64) -> torch.Tensor:
    """Multipliers of the base learning rate for every iteration, shape (num_iters,).

    none: 1; step: gamma ** (t // step_every) (default step_every = ceil(num_iters / 3));
    cosine: 0.5 * (1 + cos(pi * t / num_iters)), decaying to 0 at the end.
    """
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    t = torch.arange(num_iters, device=device, dtype=dtype)
    if schedule == "none":
        return torch.ones_like(t)
    if schedule == "step":
        every = step_every or max(1, -(-num_iters // 3))  # three equal phases
        check_int("lr_step_every", every)
        return torch.pow(torch.as_tensor(gamma, dtype=dtype, device=device), torch.div(t, every, rounding_mode="floor"))
    return 0.5 * (1.0 + torch.cos(math.pi * t / max(num_iters, 1)))


def _check_train_args(X: torch.Tensor, learning_rate, reg, num_iters, batch_size, callback_every) -> None:
    check_positive("learning_rate", learning_rate)
    check_nonnegative("reg", reg)
    check_int("num_iters", num_iters)
    check_int("batch_size", batch_size)
    check_int("callback_every", callback_every)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one example, got 0")


class _DivergenceWatch:
    """Checks each recorded loss of history (T,) once; TrainingDivergedError at the first NaN/inf."""

    def __init__(self, history: torch.Tensor, learning_rate: float):
        self.history, self.learning_rate, self.checked = history, learning_rate, 0

    def check_until(self, done: int) -> None:
        """Check the losses of iterations checked..done-1."""
        _check_finite(self.history, self.checked, done, self.learning_rate)
        self.checked = done


def train_linear_classifier(
    loss_func: Callable, W: Optional[torch.Tensor], X: torch.Tensor, y: torch.Tensor,
    learning_rate: float = 1e-3, reg: float = 1e-5, num_iters: int = 100, batch_size: int = 200,
    verbose: bool = False, *,
    seed: Optional[int] = None, generator: Optional[torch.Generator] = None, init_scale: float = 1e-6,
    lr_schedule: str = "none", lr_step_every: Optional[int] = None, lr_gamma: float = 0.5,
    callback: Optional[Callable[[int, torch.Tensor, torch.Tensor], object]] = None, callback_every: int = 100,
    check_every: Optional[int] = None, print_every: int = 100,
):
    """Train a linear classifier with minibatch SGD (batches sampled with replacement).

    Args:
        loss_func: ``(W, X_batch, y_batch, reg) -> (loss, dW)``, e.g. svm_loss_vectorized.
        W: (D, C) initial weights, or None for ``init_scale * randn(D, C)`` (C = y.max() + 1).
        X: (N, D) training data; y: (N,) int64 labels.
        seed / generator: make the initial W and the minibatch sequence reproducible.
        lr_schedule: "none", "step" (x lr_gamma every lr_step_every iterations) or "cosine".
        callback: called as ``callback(it, W, loss_history[:it])`` after iterations
            callback_every, 2*callback_every, ... and after the last one (it counts done
            iterations). A truthy return value stops training early (used for pruning).
        check_every: how often to check the loss for NaN/inf; default every iteration on the
            CPU and every 50 on accelerators (a check there waits for the device).
    Returns:
        (W (D, C), loss_history (iterations run,) tensor on X's device).
    Raises:
        TrainingDivergedError as soon as a checked loss is NaN or inf.
    """
    _check_train_args(X, learning_rate, reg, num_iters, batch_size, callback_every)
    if generator is None:
        generator = make_generator(X.device, seed)
    if W is None:
        W = init_weights(X.shape[1], int(y.max()) + 1, like=X, scale=init_scale, generator=generator)
    check_weights_data(W, X, y)
    if check_every is None:
        check_every = 1 if X.device.type == "cpu" else 50
    lrs = (learning_rate * lr_schedule_factors(lr_schedule, num_iters, step_every=lr_step_every,
                                               gamma=lr_gamma)).tolist()
    loss_history = torch.empty(num_iters, device=X.device, dtype=X.dtype)
    watch = _DivergenceWatch(loss_history, learning_rate)
    for it in range(num_iters):
        X_batch, y_batch = sample_batch(X, y, X.shape[0], batch_size, generator)
        loss, grad = loss_func(W, X_batch, y_batch, reg)
        loss_history[it] = loss.detach()
        W -= lrs[it] * grad
        done = it + 1
        if done % check_every == 0 or done == num_iters:
            watch.check_until(done)
        if verbose and it % print_every == 0:
            print(f"iteration {it} / {num_iters}: loss {loss.item():f}")
        if callback is not None and (done % callback_every == 0 or done == num_iters):
            watch.check_until(done)
            if callback(done, W, loss_history[:done]):
                return W, loss_history[:done]
    return W, loss_history


def _check_finite(history: torch.Tensor, start: int, stop: int, learning_rate: float) -> None:
    if stop - start == 1:  # the CPU default checks every iteration: one read, no temporaries
        value = history[start].item()
        if not math.isfinite(value):
            raise TrainingDivergedError(start, value, learning_rate)
        return
    window = history[start:stop]
    finite = torch.isfinite(window)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise TrainingDivergedError(start + first, float(window[first]), learning_rate)


@torch.no_grad()
def predict_linear_classifier(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Predicted labels: W (D, C), X (N, D) -> (N,) int64."""
    check_weights_data(W, X)
    return torch.argmax(X @ W, dim=1)


def accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> float:
    """Fraction of equal labels, a Python float in [0, 1]."""
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred and y_true must have the same shape, got {tuple(y_pred.shape)} and {tuple(y_true.shape)}")
    if y_true.numel() == 0:
        return float("nan")
    return (y_pred == y_true).double().mean().item()
