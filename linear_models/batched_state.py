"""State of the batched trainer's loop (linear_models.batched), one object per concern.

    ActiveTrials   the trials still training: their columns of W (D, K_active, C), lr, reg, ...
    TrialOutcomes  per trial k of K: status, iterations run, divergence loss, final weights
    Validation     validation scores at check points and each trial's last predictions
    FoldPlan       when to fold the deferred weight decay into W (see sgd_step)
    Stepper        minibatches and SGD steps between two check points
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .augment import FeatureFlip
from .optimizers import MOMENTUM_OPTIMIZERS, momentum_step_
from .rng import random_coins, random_indices
from .scoring import batched_predict
from .sgd_step import _sgd_step_, _step_workspace

__all__ = ["COMPLETED", "DIVERGED", "PRUNED", "ActiveTrials", "TrialOutcomes", "Validation", "FoldPlan", "Stepper"]

COMPLETED, DIVERGED, PRUNED = "completed", "diverged", "pruned"
# Deferred weight decay (see sgd_step._sgd_step_): fold the per-trial scale into W before any
# trial's scale could leave [2**-20, 2**20], so W / scale can neither under- nor overflow.
_SCALE_RANGE = (2.0 ** -20, 2.0 ** 20)
_DRAW_BLOCK = 1 << 18  # minibatch indices drawn at once (2 MiB): a block of steps, one copy to the device


def loss_segments(losses: Sequence[str]):
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


class ActiveTrials:
    """The trials still training; column j of each tensor belongs to trial ``ids[j]``.

    W (D, K_a, C) weights (times ``scale`` (K_a,) while a decay is deferred; plain SGD only),
    lr (T, K_a) learning rates per step, reg (K_a,), hist (T, K_a) losses per step, alive (K_a,)
    bool (False once a loss was non-finite), first_bad (K_a,) the first such step or -1.
    With momentum: V (D, K_a, C) velocities and momentum (K_a,). With averaging (asgd): A
    (D, K_a, C) the averaged iterates and avg_weight (T, K_a) (optimizers.average_weight_table).
    """

    def __init__(self, W: torch.Tensor, lr_table: torch.Tensor, reg: torch.Tensor, losses: Sequence[str],
                 optimizer: str = "sgd", momentum: Optional[torch.Tensor] = None,
                 avg_weight: Optional[torch.Tensor] = None):
        T, K = lr_table.shape
        self.losses = list(losses)  # all K trials' losses, indexed by trial
        self.ids = list(range(K))
        self.W, self.lr, self.reg = W, lr_table, reg
        self.hist = torch.empty(T, K, device=W.device, dtype=W.dtype)
        self.alive = torch.ones(K, device=W.device, dtype=torch.bool)
        self.first_bad = torch.full((K,), -1, device=W.device, dtype=torch.long)
        self.optimizer = optimizer
        # The deferred decay needs W itself to be read only at check points: plain SGD only.
        self.scale = torch.ones(K, device=W.device, dtype=W.dtype) if optimizer == "sgd" else None
        self.momentum = momentum if optimizer in MOMENTUM_OPTIMIZERS else None
        self.V = torch.zeros_like(W) if self.momentum is not None else None
        self.avg_weight = avg_weight if optimizer == "asgd" else None
        self.A = W.clone() if self.avg_weight is not None else None
        self.heads = loss_segments(self.losses)

    # Which dimension of each per-trial tensor indexes the trials (None entries are skipped).
    _TRIAL_DIM = {"W": 1, "V": 1, "A": 1, "lr": 1, "hist": 1, "avg_weight": 1,
                  "scale": 0, "reg": 0, "alive": 0, "first_bad": 0, "momentum": 0}

    @property
    def weights(self) -> torch.Tensor:
        """(D, K_a, C) the weights each trial is judged by: the averaged iterates for asgd."""
        return self.A if self.A is not None else self.W

    def keep(self, columns: list[int]) -> None:
        """Keep only the given columns (trials ``ids[j]`` for j in columns), in that order."""
        keep_t = torch.tensor(columns, device=self.W.device)
        self.ids = [self.ids[j] for j in columns]
        self.heads = loss_segments([self.losses[k] for k in self.ids])
        for name, dim in self._TRIAL_DIM.items():
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).index_select(dim, keep_t))


class TrialOutcomes:
    """How each of the K trials ended: status, iterations, the loss that diverged it, W and losses.

    W (K, D, C) final weights and loss_history (T, K), NaN after a trial stopped; both are
    filled in by :meth:`retire` when a trial leaves the active set.
    """

    def __init__(self, iters: Sequence[int], D: int, C: int, like: torch.Tensor):
        K, T = len(iters), max(iters)
        self.status = [COMPLETED] * K
        self.iterations = list(iters)  # planned; cut short by diverged() / pruned()
        self.diverged_loss: dict = {}
        self.W = torch.empty(K, D, C, device=like.device, dtype=like.dtype)
        self.loss_history = torch.full((T, K), float("nan"), device=like.device, dtype=like.dtype)

    def diverged(self, k: int, bad_step: int, loss: float) -> None:
        self.status[k], self.iterations[k] = DIVERGED, bad_step + 1
        self.diverged_loss[k] = loss

    def pruned(self, k: int, step: int) -> None:
        self.status[k], self.iterations[k] = PRUNED, step

    def retire(self, k: int, active: ActiveTrials, j: int) -> None:
        """Copy trial k's final weights (averaged, for asgd) and losses from column j of the active trials."""
        self.W[k] = active.weights[:, j, :]
        self.loss_history[: self.iterations[k], k] = active.hist[: self.iterations[k], j]


class Validation:
    """Validation accuracy at each check point, and each trial's predictions when it leaves.

    X (N_val, D) (converted once to the scores' dtype), y (N_val,); steps and rows ((K,)
    float64, NaN for trials no longer training) per check point; predictions (K, N_val)
    int64, -1 for a diverged trial.
    """

    def __init__(self, X_val: torch.Tensor, y_val: torch.Tensor, K: int, score_dtype, device):
        self.X = X_val.to(score_dtype) if score_dtype is not None else X_val  # scored at every check point
        self.y, self.K, self.score_dtype = y_val, K, score_dtype
        self.predictions = torch.full((K, X_val.shape[0]), -1, dtype=torch.long, device=device)
        self.steps: list = []
        self.rows: list = []

    @classmethod
    def create(cls, X_val, y_val, K: int, score_dtype, device) -> Optional["Validation"]:
        """A Validation, or None without (non-empty) validation data."""
        if X_val is None or y_val is None or X_val.shape[0] == 0:
            return None
        return cls(X_val, y_val, K, score_dtype, device)

    def score(self, W: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(predictions (N_val, K_a), accuracies [K_a]) of the active weights W (D, K_a, C)."""
        pred = batched_predict(W, self.X, matmul_dtype=self.score_dtype)
        return pred, (pred == self.y[:, None]).sum(dim=0).double().div_(max(self.X.shape[0], 1)).tolist()

    def record(self, step: int, ids: list, alive: list, accuracies: list) -> None:
        row = torch.full((self.K,), float("nan"), dtype=torch.float64)
        for j, k in enumerate(ids):
            if alive[j]:
                row[k] = accuracies[j]
        self.steps.append(step)
        self.rows.append(row)

    def history(self) -> Optional[torch.Tensor]:
        """(E, K) accuracies at the E check points, or None when there were none."""
        return torch.stack(self.rows) if self.rows else None


class FoldPlan:
    """Plans where to fold the deferred weight decay into W.

    The host knows every step's decay factor 1 - 2 lr reg in advance (lr_table (T, K), reg
    (K,)), so it folds before a check point (W is read there) and before any trial's scale
    could leave _SCALE_RANGE (bounds over all trials, from the products since the last fold).
    """

    def __init__(self, lr_table: torch.Tensor, reg: torch.Tensor):
        decay = (1.0 - 2.0 * lr_table.double() * reg.double()).abs().cpu()
        self.decay_lo, self.decay_hi = decay.amin(dim=1).tolist(), decay.amax(dim=1).tolist()
        self.scale_lo = self.scale_hi = 1.0

    def fold_at(self, t: int, last: bool) -> bool:
        """Whether step t folds (``last``: the step before a check point)."""
        self.scale_lo, self.scale_hi = self.scale_lo * self.decay_lo[t], self.scale_hi * self.decay_hi[t]
        fold = last or not (_SCALE_RANGE[0] <= self.scale_lo and self.scale_hi <= _SCALE_RANGE[1])
        if fold:
            self.scale_lo = self.scale_hi = 1.0
        return fold


class Stepper:
    """Runs the steps of the active trials: minibatches from X (N, D), y (N,) and the step.

    measured[t]: step t computes the full loss (with the L2 term), see ``loss_every``.
    flip: mirror each minibatch row with probability 1/2 (coins from ``flip_generator``).
    X_rows: X (N, D) in the matmul dtype, when the caller keeps one (else converted here).
    Indices and coins come from the (CPU) generators a block of steps at a time: the same
    numbers as one draw per step, on every device.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, shared_batches: bool,
                 generator, matmul_dtype, fold_plan: FoldPlan, measured: list, num_classes: int, K: int,
                 flip: Optional[FeatureFlip] = None, flip_generator=None, X_rows: Optional[torch.Tensor] = None):
        self.X, self.y, self.batch_size, self.shared = X, y, batch_size, shared_batches
        # With low-precision matmuls, minibatches are gathered from one copy of X in that dtype
        # (half the bytes, no conversion per step); X_rows is that copy when the caller keeps one.
        if X_rows is None:
            X_rows = X.to(matmul_dtype) if matmul_dtype not in (None, X.dtype) else X
        self.X_rows = X_rows
        self.generator, self.matmul_dtype = generator, matmul_dtype
        self.fold_plan, self.measured = fold_plan, measured
        self.flip, self.flip_generator = flip, flip_generator
        self.work = _step_workspace(K, num_classes, X)  # scratch for the regularization loss
        self.grad = None  # the momentum step's gradient buffer, reused while K_active is unchanged

    def _draws(self, steps: int, num_active: int):
        """Minibatch indices (steps, B) shared, or (steps, K_a, B) per trial, and flip coins of the
        same shape (or None), for a block of steps, on X's device (see linear_models.rng)."""
        shape = (steps, self.batch_size) if self.shared else (steps, num_active, self.batch_size)
        idx = random_indices(self.X.shape[0], shape, self.X.device, self.generator)
        coins = random_coins(shape, self.X.device, self.flip_generator) if self.flip is not None else None
        return idx, coins

    def _batch(self, idx: torch.Tensor, coin: Optional[torch.Tensor]):
        """X_batch (B, D), y_batch (B,) shared by all trials, or (K_a, B, D), (K_a, B) per trial."""
        X, y = self.X_rows, self.y
        if idx.dim() == 1:
            X_batch, y_batch = X.index_select(0, idx), y.index_select(0, idx)  # faster than X[idx]
        else:
            X_batch, y_batch = X.index_select(0, idx.view(-1)).view(*idx.shape, X.shape[1]), y[idx]
        if coin is not None:
            X_batch = self.flip.where(X_batch, coin)
        return X_batch, y_batch

    def run(self, active: ActiveTrials, start: int, stop: int) -> None:
        """Steps start..stop-1; W <- W - lr * dW for live trials, a diverged one keeps its weights."""
        per_step = self.batch_size * (1 if self.shared else len(active.ids))
        block = max(1, _DRAW_BLOCK // per_step)
        for first in range(start, stop, block):  # the same draws as one per step, in fewer copies
            idx, coins = self._draws(min(block, stop - first), len(active.ids))
            for i, t in enumerate(range(first, first + idx.shape[0])):
                self._step(active, t, stop, *self._batch(idx[i], coins[i] if coins is not None else None))

    def _step(self, active: ActiveTrials, t: int, stop: int, X_batch, y_batch) -> None:
        if active.V is not None:
            active.hist[t] = self._momentum_step(active, t, X_batch, y_batch)
        else:
            fold = self.fold_plan.fold_at(t, last=t == stop - 1) if active.scale is not None else True
            active.hist[t] = _sgd_step_(active.heads, active.W, X_batch, y_batch, active.reg, active.lr[t],
                                        active.alive, scale=active.scale, fold=fold,
                                        matmul_dtype=self.matmul_dtype, work=self.work,
                                        with_reg_loss=self.measured[t])
        if active.A is not None:
            active.A.lerp_(active.W, active.avg_weight[t].view(1, -1, 1))
        active.first_bad.masked_fill_(~active.alive & (active.first_bad < 0), t)

    def _momentum_step(self, active: ActiveTrials, t: int, X_batch, y_batch) -> torch.Tensor:
        D, K, C = active.W.shape
        if self.grad is None or self.grad.shape != (D, K * C):
            self.grad = torch.empty(D, K * C, dtype=active.W.dtype, device=active.W.device)
        return momentum_step_(active.heads, active.W, active.V, X_batch, y_batch, active.reg, active.lr[t],
                              active.momentum, active.optimizer == "nesterov", active.alive,
                              matmul_dtype=self.matmul_dtype, work=self.work, with_reg_loss=self.measured[t],
                              grad_out=self.grad)
