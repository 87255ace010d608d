"""Train K linear classifiers (K learning rates / L2 strengths, SVM or softmax each) as one model.

The K weight matrices are stacked as W (D, K, C). With a shared minibatch every SGD step is
two wide matrix products, ``(B, D) @ (D, K*C)`` and ``(D, B) @ (B, K*C)``, instead of 2K thin
ones, which keeps a CPU's vector units and a GPU busy. Sharing the minibatch sequence (common
random numbers) also makes comparisons between configurations less noisy.

Per trial, the result equals a separate :func:`train_linear_classifier` run fed the same
minibatches. A trial stops updating the moment its loss is NaN/inf (a device-side mask, no
host synchronisation inside the step); trials that finish, diverge or are pruned are dropped
from the stacked weights at the next check point, so later steps do less work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ._validation import check_int, check_nonnegative, check_positive, check_weights_data
from .losses import batched_loss_function
from .sgd_step import _sgd_step_, _step_workspace
from .train import init_weights, lr_schedule_factors, make_generator

__all__ = ["BatchedProgress", "BatchedResult", "train_linear_classifiers_batched", "batched_accuracy", "batched_predict"]

COMPLETED, DIVERGED, PRUNED = "completed", "diverged", "pruned"
# Deferred weight decay (see sgd_step._sgd_step_): fold the per-trial scale into W before any
# trial's scale could leave [2**-20, 2**20], so W / scale can neither under- nor overflow.
_SCALE_RANGE = (2.0 ** -20, 2.0 ** 20)


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


def _loss_segments(losses: Sequence[str]):
    """One loss name when all trials share it, else run-length segments ((name, start, stop), ...)
    for the step's heads (few segments when trials come grouped by loss)."""
    if len(set(losses)) == 1:
        return losses[0]
    segments, start = [], 0
    for j in range(1, len(losses) + 1):
        if j == len(losses) or losses[j] != losses[start]:
            segments.append((losses[start], start, j))
            start = j
    return tuple(segments)


def _per_trial(name: str, values, K: int) -> list:
    values = list(values) if isinstance(values, (list, tuple)) or torch.is_tensor(values) else [values] * K
    if len(values) != K:
        raise ValueError(f"{name} must have one value per trial ({K}), got {len(values)}")
    return values


@torch.no_grad()
def train_linear_classifiers_batched(
    loss,
    X: torch.Tensor,
    y: torch.Tensor,
    learning_rates: Sequence[float],
    regs: Sequence[float],
    num_iters=100,
    batch_size: int = 200,
    *,
    X_val: Optional[torch.Tensor] = None,
    y_val: Optional[torch.Tensor] = None,
    eval_every: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    W_init: Optional[torch.Tensor] = None,
    init_scale: float = 1e-6,
    lr_schedules="none",
    lr_step_every: Optional[int] = None,
    lr_gamma: float = 0.5,
    shared_batches: bool = True,
    matmul_dtype: Optional[torch.dtype] = None,
    loss_every: int = 1,
    callback: Optional[Callable[[BatchedProgress], object]] = None,
) -> BatchedResult:
    """Train K = len(learning_rates) linear classifiers together with minibatch SGD.

    Args:
        loss: "svm" or "softmax", or one of them per trial (the two matmuls are shared; trials
            listed grouped by loss take one loss head each).
        X: (N, D) training data, y: (N,) int64 labels.
        learning_rates, regs: length K. num_iters: an int or one per trial (a trial stops after
            its own count). lr_schedules: "none" | "step" | "cosine", or one per trial.
        X_val, y_val, eval_every: validation accuracy every eval_every iterations and at the
            end of each trial (reported to ``callback`` and kept in the result).
        seed / generator: reproducible initial weights and minibatches. W_init: (D, K, C)
            initial weights instead of ``init_scale * randn``.
        shared_batches: one minibatch for all trials (default); False samples one per trial.
        matmul_dtype: e.g. torch.bfloat16 to run the two matmuls (and the validation scores)
            in lower precision; weights and their updates stay in X's dtype.
        loss_every: measure the loss (data + L2) every k steps, at each trial's last step and
            before each check point; loss_history is NaN at the other steps. The L2 term is a
            pass over all weights: about 7% of a step on the CPU. Updates are the same for
            every k. Divergence is caught at the step where the data loss becomes non-finite;
            where the L2 term alone overflows first, at the next measured step.
        callback: ``callback(BatchedProgress)`` at every check point; it returns trial indices
            to prune (or None). Pruned trials stop at once.
    Returns:
        BatchedResult.
    """
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
    device, dtype = X.device, X.dtype
    num_train, D = X.shape
    if generator is None:
        generator = make_generator(device, seed)
    num_classes = int(y.max()) + 1
    if W_init is None:
        W = init_weights(D, num_classes, like=X, scale=init_scale, generator=generator, num_trials=K)
    else:
        if W_init.shape[:2] != (D, K):
            raise ValueError(f"W_init must have shape ({D}, {K}, C), got {tuple(W_init.shape)}")
        W = W_init.to(device=device, dtype=dtype).clone(memory_format=torch.contiguous_format)
        num_classes = W.shape[2]
    check_weights_data(W[:, 0, :], X, y)
    T = max(iters)

    # lr_table[t, k]: trial k's learning rate at step t, 0 once it has run its num_iters.
    lr_table = torch.zeros(T, K, device=device, dtype=dtype)
    for k in range(K):
        lr_table[: iters[k], k] = lrs[k] * lr_schedule_factors(
            schedules[k], iters[k], step_every=lr_step_every, gamma=lr_gamma, device=device).to(dtype)
    reg_t = torch.tensor(regs, device=device, dtype=dtype)

    W_out = torch.empty(K, D, num_classes, device=device, dtype=dtype)
    loss_history = torch.full((T, K), float("nan"), device=device, dtype=dtype)
    status = [COMPLETED] * K
    stopped = list(iters)
    diverged_loss: dict = {}

    do_eval = X_val is not None and y_val is not None and X_val.shape[0] > 0
    if do_eval and matmul_dtype is not None:
        X_val = X_val.to(matmul_dtype)  # scored at every check point: converted once
    val_predictions = torch.full((K, X_val.shape[0]), -1, dtype=torch.long, device=device) if do_eval else None
    checkpoints = set(iters)
    if eval_every:
        checkpoints.update(range(eval_every, T, eval_every))
    val_steps: list = []
    val_rows: list = []

    # State of the trials still training ("active"); columns follow `active`.
    active = list(range(K))
    W_act, lr_act, reg_act = W, lr_table, reg_t
    hist_act = torch.empty(T, K, device=device, dtype=dtype)
    alive = torch.ones(K, device=device, dtype=torch.bool)  # False once a loss was non-finite
    first_bad = torch.full((K,), -1, device=device, dtype=torch.long)

    # Weight decay is deferred into `scale` (K numbers) instead of a pass over W every step.
    # The host knows every step's decay factor 1 - 2 lr reg in advance, so it plans where to
    # fold the scale into W: before a check point (W is read there) and before any scale could
    # leave _SCALE_RANGE (bounds over all trials, from the products since the last fold).
    scale = torch.ones(K, device=device, dtype=dtype)
    decay = (1.0 - 2.0 * lr_table.double() * reg_t.double()).abs().cpu()
    decay_lo, decay_hi = decay.amin(dim=1).tolist(), decay.amax(dim=1).tolist()
    scale_lo = scale_hi = 1.0
    work = _step_workspace(K, num_classes, X)  # scratch for the regularization loss
    # measured[t]: the full loss is computed at step t (see loss_every).
    measured = torch.zeros(T, dtype=torch.bool)
    measured[::loss_every] = True
    measured[[c - 1 for c in checkpoints]] = True
    measured_host = measured.tolist()
    heads = _loss_segments([losses[k] for k in active])
    step = 0
    for stop in sorted(checkpoints):
        for t in range(step, stop):
            scale_lo, scale_hi = scale_lo * decay_lo[t], scale_hi * decay_hi[t]
            fold = t == stop - 1 or not (_SCALE_RANGE[0] <= scale_lo and scale_hi <= _SCALE_RANGE[1])
            if fold:
                scale_lo = scale_hi = 1.0
            if shared_batches:
                idx = torch.randint(num_train, (batch_size,), device=device, generator=generator)
                X_batch, y_batch = X.index_select(0, idx), y.index_select(0, idx)  # faster than X[idx]
            else:
                idx = torch.randint(num_train, (len(active), batch_size), device=device, generator=generator)
                X_batch, y_batch = X.index_select(0, idx.view(-1)).view(*idx.shape, D), y[idx]
            # W <- W - lr * dW for live trials; a diverged trial keeps its last weights.
            hist_act[t] = _sgd_step_(heads, W_act, X_batch, y_batch, reg_act, lr_act[t], alive, scale=scale,
                                     fold=fold, matmul_dtype=matmul_dtype, work=work,
                                     with_reg_loss=measured_host[t])
            first_bad.masked_fill_(~alive & (first_bad < 0), t)
        step = stop

        # Check point: the only place that reads device values back.
        alive_host = alive.tolist()
        bad_host = first_bad.tolist()
        if do_eval:  # predictions, not only accuracies: a leaving trial keeps its own
            val_pred = batched_predict(W_act, X_val, matmul_dtype=matmul_dtype)  # (N_val, len(active))
            val_host = (val_pred == y_val[:, None]).sum(dim=0).double().div_(max(X_val.shape[0], 1)).tolist()
        remove = set()
        for j, k in enumerate(active):
            if not alive_host[j]:
                status[k], stopped[k] = DIVERGED, bad_host[j] + 1
                diverged_loss[k] = float(hist_act[bad_host[j], j])
                remove.add(j)
            elif iters[k] <= stop:
                remove.add(j)
        if do_eval:
            row = torch.full((K,), float("nan"), dtype=torch.float64)
            for j, k in enumerate(active):
                if alive_host[j]:
                    row[k] = val_host[j]
            val_steps.append(stop)
            val_rows.append(row)
        if callback is not None:
            live = [(j, k) for j, k in enumerate(active) if alive_host[j]]
            progress = BatchedProgress(
                step=stop,
                active=[k for _, k in live],
                val_acc={k: val_host[j] for j, k in live} if do_eval else {},
                train_loss={k: float(hist_act[stop - 1, j]) for j, k in live},
                weights=W_act.index_select(1, torch.tensor([j for j, _ in live], device=device, dtype=torch.long)),
            )
            for k in callback(progress) or ():
                if k in progress.active and iters[k] > stop:
                    j = active.index(k)
                    status[k], stopped[k] = PRUNED, stop
                    remove.add(j)
        if remove:
            for j in sorted(remove):
                k = active[j]
                W_out[k] = W_act[:, j, :]
                if do_eval:
                    val_predictions[k] = val_pred[:, j] if status[k] != DIVERGED else -1
                loss_history[: stopped[k], k] = hist_act[: stopped[k], j]
            keep = [j for j in range(len(active)) if j not in remove]
            if not keep:
                break
            keep_t = torch.tensor(keep, device=device)
            active = [active[j] for j in keep]
            heads = _loss_segments([losses[k] for k in active])
            W_act = W_act.index_select(1, keep_t)
            scale = scale.index_select(0, keep_t)
            lr_act = lr_act.index_select(1, keep_t)
            reg_act = reg_act.index_select(0, keep_t)
            hist_act = hist_act.index_select(1, keep_t)
            alive = alive.index_select(0, keep_t)
            first_bad = first_bad.index_select(0, keep_t)

    if loss_every > 1:  # the data losses of the steps between measurements are not recorded
        loss_history[~measured.to(device)] = float("nan")
    val_history = torch.stack(val_rows) if val_rows else None
    return BatchedResult(W=W_out, loss_history=loss_history, iterations=stopped, status=status,
                         val_steps=val_steps, val_history=val_history, diverged_loss=diverged_loss,
                         val_predictions=val_predictions)
