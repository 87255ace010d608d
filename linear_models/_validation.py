"""One place for argument checks, one message format.

Every message names the parameter, the rule and the value, e.g.
``learning_rate must be > 0, got -0.1``, so a user can fix the call without reading code.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def _fail(name: str, rule: str, value) -> None:
    raise ValueError(f"{name} must be {rule}, got {value!r}")


def check_positive(name: str, value) -> float:
    """``value`` must be a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        _fail(name, "> 0", value)
    return float(value)


def check_nonnegative(name: str, value) -> float:
    """``value`` must be a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        _fail(name, ">= 0", value)
    return float(value)


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value)
    return int(value)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        _fail(name, f"one of {sorted(choices)}", value)
    return value


def check_weights_data(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Shapes of W (D, C), X (N, D), y (N,) agree; a message that says what is off.

    A D mismatch of exactly one is almost always the bias column, so the message says so.
    """
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (N, D), got shape {tuple(X.shape)}")
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D (D, C), got shape {tuple(W.shape)}")
    if X.shape[1] != W.shape[0]:
        hint = ""
        if W.shape[0] == X.shape[1] + 1:
            hint = ": is the bias column missing? (preprocess(..., bias_trick=True) appends it)"
        elif X.shape[1] == W.shape[0] + 1:
            hint = ": X has a bias column that W lacks"
        raise ValueError(f"X has {X.shape[1]} features but W expects {W.shape[0]}{hint}")
    if y is not None:
        if y.dim() != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= W.shape[1]):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(f"labels must be in [0, {W.shape[1] - 1}] for W with {W.shape[1]} classes, got {bad}")
