"""Train K linear classifiers (K learning rates / L2 strengths, SVM or softmax each) as one model.

The K weight matrices are stacked as W (D, K, C). With a shared minibatch every SGD step is
two wide matrix products, ``(B, D) @ (D, K*C)`` and ``(D, B) @ (B, K*C)``, instead of 2K thin
ones, which keeps a CPU's vector units and a GPU busy. Sharing the minibatch sequence (common
random numbers) also makes comparisons between configurations less noisy.

Per trial, the result equals a separate :func:`train_linear_classifier` run fed the same
minibatches. A trial stops updating the moment its loss is NaN/inf (a device-side mask, no
host synchronisation inside the step); trials that finish, diverge or are pruned are dropped
from the stacked weights at the next check point, so later steps do less work.

The step itself is linear_models.sgd_step; the loop's state lives in linear_models.batched_state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from ._validation import check_int, check_nonnegative, check_positive, check_weights_data
from .batched_state import COMPLETED, DIVERGED, PRUNED, ActiveTrials, FoldPlan, Stepper, TrialOutcomes, Validation
from .augment import FeatureFlip
from .losses import batched_loss_function
from .optimizers import average_weight_table, check_optimizer
from .scoring import batched_accuracy, batched_predict
from .train import init_weights, lr_schedule_factors, make_generator

__all__ = ["BatchedProgress", "BatchedResult", "train_linear_classifiers_batched", "batched_accuracy", "batched_predict"]


@dataclass
class BatchedProgress:
    """What a callback sees at a check point (all host values).

    step: iterations done; active: trial indices still training; val_acc: {trial: accuracy}
    for the active trials when validation data was given (else empty); train_loss:
    {trial: last minibatch loss}; weights: (D, len(active), C) current weights of the active
    trials, in ``active`` order (a copy).
    """

    step: int
    active: list
    val_acc: dict
    train_loss: dict
    weights: Optional[torch.Tensor] = None


@dataclass
class BatchedResult:
    """Outcome of a batched run of K trials.

    W: (K, D, C) final weights. loss_history: (T, K) minibatch losses, T = max num_iters, NaN
    after a trial stopped (and, with ``loss_every`` > 1, at the steps not measured).
    iterations: iterations each trial ran. status: "completed", "diverged" or "pruned" per trial.
    val_steps / val_history: check points and (E, K) validation accuracies there (NaN where a
    trial was no longer training). diverged_loss: the non-finite loss per diverged trial.
    val_predictions: (K, N_val) int64 predicted validation labels at each trial's last check
    point (its final weights; -1 for a diverged trial), when validation data was given.
    """

    W: torch.Tensor
    loss_history: torch.Tensor
    iterations: list
    status: list
    val_steps: list = field(default_factory=list)
    val_history: Optional[torch.Tensor] = None
    diverged_loss: dict = field(default_factory=dict)
    val_predictions: Optional[torch.Tensor] = None

    def trial_loss_history(self, k: int) -> torch.Tensor:
        """Loss curve of trial k, (iterations[k],)."""
        return self.loss_history[: self.iterations[k], k]


class _TrialSpec(NamedTuple):
    """The checked per-trial settings, one entry per trial."""

    losses: list
    lrs: list
    regs: list
    iters: list
    schedules: list
    optimizer: str
    momentum: list
    average_start: list


def _per_trial(name: str, values, K: int) -> list:
    values = list(values) if isinstance(values, (list, tuple)) or torch.is_tensor(values) else [values] * K
    if len(values) != K:
        raise ValueError(f"{name} must have one value per trial ({K}), got {len(values)}")
    return values


def _checked_spec(loss, learning_rates, regs, num_iters, lr_schedules, batch_size, loss_every,
                  eval_every, optimizer="sgd", momentum=0.9, average_start=0.5) -> _TrialSpec:
    """Check the arguments (the message names the parameter); one value per trial each."""
    K = len(learning_rates)
    check_int("number of trials", K)
    losses = [loss] * K if isinstance(loss, str) else _per_trial("loss", loss, K)
    for name in set(losses):
        batched_loss_function(name)  # checks the name
    lrs = [check_positive("learning_rate", lr) for lr in _per_trial("learning_rates", learning_rates, K)]
    regs = [check_nonnegative("reg", r) for r in _per_trial("regs", regs, K)]
    iters = [check_int("num_iters", int(n)) for n in _per_trial("num_iters", num_iters, K)]
    schedules = _per_trial("lr_schedules", lr_schedules, K)
    check_int("batch_size", batch_size)
    check_int("loss_every", loss_every)
    if eval_every is not None:
        check_int("eval_every", eval_every)
    momentum, average_start = _per_trial("momentum", momentum, K), _per_trial("average_start", average_start, K)
    check_optimizer(optimizer, momentum, average_start)
    return _TrialSpec(losses, lrs, regs, iters, schedules, optimizer, momentum, average_start)


def _initial_weights(X: torch.Tensor, y: torch.Tensor, K: int, W_init, init_scale: float, generator) -> torch.Tensor:
    """W (D, K, C): ``init_scale * randn`` (C = y.max() + 1), or a contiguous copy of W_init (D, K, C);
    checked against the data."""
    _, D = X.shape
    num_classes = int(y.max()) + 1
    if W_init is None:
        W = init_weights(D, num_classes, like=X, scale=init_scale, generator=generator, num_trials=K)
    elif W_init.shape[:2] != (D, K):
        raise ValueError(f"W_init must have shape ({D}, {K}, C), got {tuple(W_init.shape)}")
    else:
        W = W_init.to(device=X.device, dtype=X.dtype).clone(memory_format=torch.contiguous_format)
    check_weights_data(W[:, 0, :], X, y)
    return W


def _lr_table(spec: _TrialSpec, step_every, gamma: float, like: torch.Tensor) -> torch.Tensor:
    """lr_table (T, K): trial k's learning rate at step t, 0 once it has run its num_iters."""
    table = torch.zeros(max(spec.iters), len(spec.lrs), device=like.device, dtype=like.dtype)
    for k, (lr, n, schedule) in enumerate(zip(spec.lrs, spec.iters, spec.schedules)):
        table[:n, k] = lr * lr_schedule_factors(schedule, n, step_every=step_every, gamma=gamma,
                                                device=like.device).to(like.dtype)
    return table


def _active_trials(spec: _TrialSpec, W: torch.Tensor, lr_table: torch.Tensor, reg: torch.Tensor) -> ActiveTrials:
    """All K trials at step 0, with the optimizer's per-trial state."""
    momentum = torch.tensor(spec.momentum, device=W.device, dtype=W.dtype)
    averaging = average_weight_table(spec.iters, spec.average_start, W) if spec.optimizer == "asgd" else None
    return ActiveTrials(W, lr_table, reg, spec.losses, spec.optimizer, momentum=momentum, avg_weight=averaging)


def _flip_args(flip: Optional[FeatureFlip], generator: Optional[torch.Generator], X: torch.Tensor) -> dict:
    """Stepper's flip (on X's device and dtype) and the coins' own generator, seeded from the
    minibatch generator's seed (+1); nothing without a flip."""
    if flip is None:
        return {}
    seed = generator.initial_seed() if generator is not None else int(torch.randint(2 ** 62, ()))
    return {"flip": flip.to(X.device, X.dtype), "flip_generator": make_generator(X.device, seed + 1)}


def _checkpoints(iters: list, eval_every: Optional[int]) -> list:
    """Sorted steps after which the host looks: each trial's end, and every eval_every steps."""
    checkpoints = set(iters)
    if eval_every:
        checkpoints.update(range(eval_every, max(iters), eval_every))
    return sorted(checkpoints)


def _measured_steps(T: int, loss_every: int, checkpoints: list) -> torch.Tensor:
    """measured (T,) bool: the full loss is computed at step t (every loss_every, and before each check point)."""
    measured = torch.zeros(T, dtype=torch.bool)
    measured[::loss_every] = True
    measured[[c - 1 for c in checkpoints]] = True
    return measured


def _report(callback, active: ActiveTrials, alive: list, accuracies, step: int, iters: list,
            outcomes: TrialOutcomes) -> set:
    """Call ``callback(BatchedProgress)``; mark the trials it prunes; return their columns."""
    live = [(j, k) for j, k in enumerate(active.ids) if alive[j]]
    last_loss = active.hist[step - 1].tolist()  # one read of the device for all trials
    progress = BatchedProgress(
        step=step,
        active=[k for _, k in live],
        val_acc={k: accuracies[j] for j, k in live} if accuracies is not None else {},
        train_loss={k: last_loss[j] for j, k in live},
        weights=active.weights.index_select(1, torch.tensor([j for j, _ in live], device=active.W.device, dtype=torch.long)),
    )
    pruned = set()
    for k in callback(progress) or ():
        if k in progress.active and iters[k] > step:
            outcomes.pruned(k, step)
            pruned.add(active.ids.index(k))
    return pruned


def _losses_at(hist: torch.Tensor, steps: list) -> list:
    """hist[steps[j], j] for each column j of hist (T, K_a) (steps -1: any value), in one read."""
    rows = torch.tensor([max(t, 0) for t in steps], device=hist.device).view(1, -1)
    return hist.gather(0, rows).squeeze(0).tolist()


def _check_point(step: int, active: ActiveTrials, outcomes: TrialOutcomes, validation: Optional[Validation],
                 iters: list, callback) -> bool:
    """The only place that reads device values back: divergence, validation, the callback.

    Trials that diverged, completed or were pruned leave ``active`` (their outcome filled in).
    Returns whether any trial is still training.
    """
    alive, first_bad = active.alive.tolist(), active.first_bad.tolist()
    predictions, accuracies = validation.score(active.weights) if validation else (None, None)
    bad_loss = _losses_at(active.hist, first_bad) if not all(alive) else None
    leaving = set()
    for j, k in enumerate(active.ids):
        if not alive[j]:
            outcomes.diverged(k, first_bad[j], bad_loss[j])
            leaving.add(j)
        elif iters[k] <= step:
            leaving.add(j)
    if validation:  # predictions, not only accuracies: a leaving trial keeps its own
        validation.record(step, active.ids, alive, accuracies)
    if callback is not None:
        leaving |= _report(callback, active, alive, accuracies, step, iters, outcomes)
    if not leaving:
        return True
    for j in sorted(leaving):
        k = active.ids[j]
        outcomes.retire(k, active, j)
        if validation:
            validation.predictions[k] = predictions[:, j] if outcomes.status[k] != DIVERGED else -1
    keep = [j for j in range(len(active.ids)) if j not in leaving]
    if keep:
        active.keep(keep)
    return bool(keep)


def _result(outcomes: TrialOutcomes, validation: Optional[Validation]) -> BatchedResult:
    return BatchedResult(W=outcomes.W, loss_history=outcomes.loss_history, iterations=outcomes.iterations,
                         status=outcomes.status, val_steps=validation.steps if validation else [],
                         val_history=validation.history() if validation else None,
                         diverged_loss=outcomes.diverged_loss,
                         val_predictions=validation.predictions if validation else None)


@torch.no_grad()
def train_linear_classifiers_batched(
    loss, X: torch.Tensor, y: torch.Tensor, learning_rates: Sequence[float], regs: Sequence[float],
    num_iters=100, batch_size: int = 200, *,
    X_val: Optional[torch.Tensor] = None, y_val: Optional[torch.Tensor] = None, eval_every: Optional[int] = None,
    seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
    W_init: Optional[torch.Tensor] = None, init_scale: float = 1e-6,
    lr_schedules="none", lr_step_every: Optional[int] = None, lr_gamma: float = 0.5,
    shared_batches: bool = True, matmul_dtype: Optional[torch.dtype] = None, loss_every: int = 1,
    callback: Optional[Callable[[BatchedProgress], object]] = None, X_rows: Optional[torch.Tensor] = None,
    optimizer: str = "sgd", momentum=0.9, average_start=0.5, flip: Optional[FeatureFlip] = None,
    score_dtype: Optional[torch.dtype] = None,
) -> BatchedResult:
    """Train K = len(learning_rates) linear classifiers together with minibatch SGD.

    Args:
        loss: "svm" or "softmax", or one of them per trial (the two matmuls are shared; trials
            listed grouped by loss take one loss head each).
        X: (N, D) training data, y: (N,) int64 labels.
        learning_rates, regs: length K. num_iters: an int or one per trial (a trial stops after
            its own count). lr_schedules: "none" | "step" | "cosine", or one per trial.
        X_val (N_val, D), y_val (N_val,), eval_every: validation accuracy every eval_every
            iterations and at the end of each trial (reported to ``callback``, kept in the result).
        seed / generator: reproducible initial weights and minibatches. W_init: (D, K, C)
            initial weights instead of ``init_scale * randn``.
        shared_batches: one minibatch for all trials (default); False samples one per trial.
        matmul_dtype: e.g. torch.bfloat16 for each step's two matmuls (W stays in X's dtype).
        score_dtype: validation scores' precision (None: X's dtype, the weights' own accuracy).
        loss_every: measure the loss (data + L2) every k steps, at each trial's last step and
            before each check point; loss_history is NaN at the other steps (the L2 term is a
            pass over all weights, ~7% of a CPU step). Updates are the same for every k; a non-finite
            data loss stops a trial at once, an overflowing L2 term at the next measured step.
        callback: ``callback(BatchedProgress)`` at every check point; it returns trial indices
            to prune (or None). Pruned trials stop at once.
        optimizer: "sgd" | "momentum" | "nesterov" | "asgd" (linear_models.optimizers), with
            momentum and average_start (a float or one per trial). asgd's averaged weights are
            what is validated, passed to ``callback`` and returned.
        flip: mirror each training minibatch row with probability 1/2 (linear_models.augment).
        X_rows: X (N, D) in ``matmul_dtype``, a copy the caller keeps (else X is converted once).
    Returns:
        BatchedResult (W (K, D, C), loss_history (T, K), ...).
    """
    spec = _checked_spec(loss, learning_rates, regs, num_iters, lr_schedules, batch_size, loss_every, eval_every,
                         optimizer, momentum, average_start)
    K, T = len(spec.lrs), max(spec.iters)
    generator = generator if generator is not None else make_generator(X.device, seed)
    W = _initial_weights(X, y, K, W_init, init_scale, generator)
    lr_table = _lr_table(spec, lr_step_every, lr_gamma, X)
    reg_t = torch.tensor(spec.regs, device=X.device, dtype=X.dtype)
    outcomes = TrialOutcomes(spec.iters, X.shape[1], W.shape[2], like=X)
    validation = Validation.create(X_val, y_val, K, score_dtype, X.device)
    active = _active_trials(spec, W, lr_table, reg_t)
    checkpoints = _checkpoints(spec.iters, eval_every)
    measured = _measured_steps(T, loss_every, checkpoints)
    stepper = Stepper(X, y, batch_size, shared_batches, generator, matmul_dtype, FoldPlan(lr_table, reg_t),
                      measured.tolist(), W.shape[2], K, X_rows=_checked_rows(X_rows, X, matmul_dtype),
                      **_flip_args(flip, generator, X))
    _run(stepper, active, outcomes, validation, checkpoints, spec.iters, callback)
    if loss_every > 1:  # the data losses of the steps between measurements are not recorded
        outcomes.loss_history[~measured.to(X.device)] = float("nan")
    return _result(outcomes, validation)


def _checked_rows(X_rows: Optional[torch.Tensor], X: torch.Tensor, matmul_dtype) -> Optional[torch.Tensor]:
    """X_rows, checked against X (N, D) and matmul_dtype; None when not given."""
    if X_rows is None:
        return None
    if X_rows.shape != X.shape or X_rows.dtype != (matmul_dtype or X.dtype) or X_rows.device != X.device:
        raise ValueError(f"X_rows must be X {tuple(X.shape)} in matmul_dtype {matmul_dtype} on {X.device}, "
                         f"got {tuple(X_rows.shape)} {X_rows.dtype} on {X_rows.device}")
    return X_rows


def _run(stepper: Stepper, active: ActiveTrials, outcomes: TrialOutcomes, validation: Optional[Validation],
         checkpoints: list, iters: list, callback) -> None:
    """Step from check point to check point until no trial is left training."""
    start = 0
    for stop in checkpoints:
        stepper.run(active, start, stop)
        start = stop
        if not _check_point(stop, active, outcomes, validation, iters, callback):
            break
