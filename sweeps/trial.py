"""The words the runner, the recording, the engine and compare share: a trial to run
(TrialSpec), what it produced (TrialOutcome), and its statuses."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig

COMPLETED, PRUNED, DIVERGED, ERROR = "completed", "pruned", "diverged", "error"


@dataclass
class TrialSpec:
    """One trial to run: its composed config, Optuna trial (if any) and MLflow run id."""

    cfg: DictConfig
    number: int = 0
    optuna_trial: Any = None  # optuna.Trial, for intermediate reports and pruning
    run_id: Optional[str] = None
    # Tags to log with the trial's metrics, from its outcome (the sweep: the final-state tags,
    # so that ending the run takes one request fewer).
    record_tags: Optional[Callable[["TrialOutcome"], Dict[str, str]]] = None


@dataclass
class TrialOutcome:
    """What a trial produced. status: completed | pruned | diverged | error."""

    number: int
    status: str
    val_acc: float = float("nan")
    train_acc: float = float("nan")
    test_acc: Optional[float] = None
    iterations: int = 0
    seconds: float = 0.0
    tracking_seconds: float = 0.0
    message: str = ""
    weights: Optional[torch.Tensor] = None  # (D, C) on the CPU
    val_history: Dict[int, float] = field(default_factory=dict)
    loss_curve: Tuple[List[int], List[float]] = ((), ())  # logged train_loss (steps, values)
    val_predictions: Optional[np.ndarray] = None  # (N_val,) predicted classes at the last check
    recorded: Optional[Future] = None  # with an executor: done once metrics and artifacts are in MLflow
    logged_tags: Dict[str, str] = field(default_factory=dict)  # spec.record_tags, once logged


class NoRunError(RuntimeError):
    """A trial has no MLflow run to record into: creating it failed (and was logged then)."""
