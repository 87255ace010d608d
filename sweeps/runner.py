"""Train a batch of trials as stacked models: the code both the sweeper and a single run use.

Trials whose configs differ only in loss (SVM or softmax), learning rate, regularization,
iteration count, learning-rate decay, momentum and averaging start train together as one
stacked model (linear_models' batched trainer: the two matmuls of a step are shared, each loss
has its head); other differences (optimizer, preprocess, augment, batch size, dtype, dataset,
seed) split the batch into groups.

Every trial starts from the same initial weights and sees the same minibatch sequence for a
given seed, so a trial's result depends on its own params and the seed only, never on which
other trials shared its batch: batched and sequential sweeps agree.
"""
from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

import linear_models as lm

from .config_view import ConfigView
from .data import (load_features, matmul_dtype, matmul_dtype_name, matmul_precision, matmul_rows, resolve_device,
                   score_dtype)
from .recording import TrialRecording, record_trials
from .ticker import TrainingTicker
from .tracking import Tracker
from .trial import COMPLETED, DIVERGED, ERROR, PRUNED, TrialOutcome, TrialSpec  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Keys that may differ between trials trained as one stacked model.
BATCHABLE_KEYS = ("loss.name", "model.learning_rate", "model.reg", "model.num_iters", "model.lr_decay",
                  "optimizer.momentum", "optimizer.average_start")
TRAIN_SUBSET = 2_000  # periodic train accuracy is measured on this many fixed training examples



def group_key(cfg: DictConfig) -> str:
    """Configs with the same key can share one stacked model.

    Compared unresolved (interpolations as written; 7x cheaper than resolving, and asked once
    per trial on the sweep's critical path): configs that are equal unresolved resolve equally.
    """
    plain = cfg.to_container() if isinstance(cfg, ConfigView) else OmegaConf.to_container(cfg, resolve=False)
    for dotted in BATCHABLE_KEYS:
        section, name = dotted.split(".")
        plain.get(section, {}).pop(name, None)
    return json.dumps(plain, sort_keys=True, default=str)


def trial_params(cfg: DictConfig, device: torch.device) -> Dict[str, Any]:
    """The MLflow params of a trial (names other tools rely on)."""
    m = cfg.model
    return {
        "learning_rate": m.learning_rate, "reg": m.reg, "loss": cfg.loss.name, "num_iters": m.num_iters,
        "batch_size": m.batch_size, "dtype": m.dtype, "device": str(device), "dataset": cfg.dataset.name,
        "seed": cfg.seed, "init_scale": m.init_scale, "lr_decay": m.lr_decay,
        "lr_decay_every": m.lr_decay_every, "lr_decay_gamma": m.lr_decay_gamma, "eval_every": cfg.eval_every,
        "matmul_dtype": matmul_dtype_name(m, device), "score_in_matmul_dtype": m.score_in_matmul_dtype,
        "validation_ratio": cfg.dataset.validation_ratio,
        **training_option_params(cfg),
    }


def training_option_params(cfg: DictConfig) -> Dict[str, Any]:
    """The optimizer / preprocess / augment choices as params; a value that only exists for
    some choices (momentum, average_start, epsilon, components) is None for the others."""
    o, p = cfg.optimizer, cfg.preprocess
    return {
        "optimizer": o.name, "momentum": o.momentum if o.name in ("momentum", "nesterov") else None,
        "average_start": o.average_start if o.name == "asgd" else None,
        "preprocess": p.name, "epsilon": p.epsilon if p.name in ("zca", "pca") else None,
        "components": p.components if p.name == "pca" else None, "augment": cfg.augment.name,
    }


def run_trials(specs: Sequence[TrialSpec], tracker: Optional[Tracker], *, report_intermediate: bool = False,
               should_prune: Optional[Callable[[Any], bool]] = None,
               device: Optional[torch.device] = None, executor=None,
               diagnostic_plots: Optional[bool] = True) -> List[TrialOutcome]:
    """Train ``specs`` (grouped into stacked models) and log each to its MLflow run.

    The MLflow runs stay RUNNING: the caller ends them once Optuna has been told, so both
    stores agree. ``should_prune(optuna_trial)`` is asked at each validation check.
    ``device``: where every group trains (default: each config's ``device.type``, resolved).
    One launch trains on one device; several GPUs take one worker process each
    (docker/gpu-workers.sh): threads of one process would share the GIL of a dispatch-bound step.
    ``executor``: record trials there (e.g. a background thread) instead of before returning;
    each outcome's ``recorded`` future then tells when (and whether) its recording is done.
    ``diagnostic_plots``: draw each run's loss-curve and confusion images (with
    ``tracking.log_images``); False: the caller draws them for the trials it picks
    (:func:`save_diagnostic_plots`); None: as each config's ``tracking.diagnostic_plots`` says
    (``all``: every run; ``best``: the caller's pick).
    """
    groups: Dict[str, List[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec.cfg), []).append(i)
    outcomes: List[Optional[TrialOutcome]] = [None] * len(specs)
    for indices in groups.values():
        indices.sort(key=lambda i: specs[i].cfg.loss.name)  # one loss head per loss (stable sort)
        members = [specs[i] for i in indices]
        dev = device if device is not None else resolve_device(members[0].cfg.device.type)
        try:
            results = _run_group(members, dev, tracker, report_intermediate, should_prune, executor,
                                 diagnostic_plots)
        except Exception as e:  # a broken group fails its trials, not the sweep
            log.exception("trials %s failed", [s.number for s in members])
            results = [TrialOutcome(s.number, ERROR, message=f"error: {type(e).__name__}: {e}") for s in members]
        for i, r in zip(indices, results):
            outcomes[i] = r
    return outcomes  # type: ignore[return-value]


def _run_group(specs: List[TrialSpec], device: torch.device, tracker: Optional[Tracker], report_intermediate: bool,
               should_prune: Optional[Callable[[Any], bool]], executor=None,
               diagnostic_plots: Optional[bool] = True) -> List[TrialOutcome]:
    """Train one stack of trials (same data, seed, batch size, dtype) and record each one."""
    cfg = specs[0].cfg
    if diagnostic_plots is None:
        diagnostic_plots = cfg.tracking.diagnostic_plots == "all"
    data = load_features(cfg, device)
    K = len(specs)
    # Same initial W and minibatch stream for every trial of this seed (see module docstring).
    gen = lm.make_generator(device, cfg.seed)
    W0 = lm.init_weights(data["X_train"].shape[1], len(data["class_names"]), like=data["X_train"],
                         scale=cfg.model.init_scale, generator=gen)
    mm_dtype = matmul_dtype(cfg.model, device)
    X_rows = matmul_rows(data, mm_dtype)
    # Accuracies in the weights' dtype unless asked (bf16 scores flip near-ties); on CUDA, auto
    # runs both in TF32 (matmul_precision).
    scores_in = score_dtype(cfg.model, device)
    score_rows = matmul_rows(data, scores_in)
    checks = _CheckPoints(specs, data, score_rows, scores_in, report_intermediate, should_prune)
    start = time.perf_counter()
    label = f"training {K} trial{'s' if K > 1 else ''} ({', '.join(sorted({s.cfg.loss.name for s in specs}))})"
    with TrainingTicker(label, max(checks.iters), lambda: checks.step), matmul_precision(cfg.model, device):
        result = lm.train_linear_classifiers_batched(
            [s.cfg.loss.name for s in specs], data["X_train"], data["y_train"],
            [s.cfg.model.learning_rate for s in specs], [s.cfg.model.reg for s in specs], checks.iters,
            cfg.model.batch_size, X_val=data["X_val"], y_val=data["y_val"], eval_every=cfg.eval_every,
            generator=gen, W_init=W0.unsqueeze(1).expand(-1, K, -1).contiguous(),
            lr_schedules=[s.cfg.model.lr_decay for s in specs], lr_step_every=cfg.model.lr_decay_every,
            lr_gamma=cfg.model.lr_decay_gamma, matmul_dtype=mm_dtype, loss_every=cfg.tracking.loss_every,
            callback=checks, optimizer=cfg.optimizer.name, momentum=[s.cfg.optimizer.momentum for s in specs],
            average_start=[s.cfg.optimizer.average_start for s in specs],
            flip=data["transform"].flip if cfg.augment.name == "flip" else None, X_rows=X_rows,
            score_dtype=scores_in)
        outcomes = _outcomes(specs, result, data, score_rows, scores_in, checks)
    for out in outcomes:  # amortized over the stack, the final accuracies on whole splits included
        out.seconds = (time.perf_counter() - start) / K
    if tracker is not None:
        # With an executor the runs may still be being created there: that job runs first.
        items = [TrialRecording(spec, out, checks.train_hist[k], Future() if executor is not None else None)
                 for k, (spec, out) in enumerate(zip(specs, outcomes)) if spec.run_id is not None or executor]
        for it in items:
            it.outcome.recorded = it.done
        if executor is None:
            failures = record_trials(tracker, items, data, K, diagnostic_plots)
            if failures:
                raise failures[0]
        elif items:
            executor.submit(record_trials, tracker, items, data, K, diagnostic_plots)
    return outcomes


class _CheckPoints:
    """The batched trainer's callback: at each check point, the train accuracy on a fixed subset
    and the val accuracy per live trial; reports them to Optuna and returns the trials to prune."""

    def __init__(self, specs: List[TrialSpec], data: dict, score_rows: torch.Tensor, scores_in, report: bool,
                 should_prune: Optional[Callable[[Any], bool]]):
        self.specs, self.report, self.should_prune, self.scores_in = specs, report, should_prune, scores_in
        # The first rows of the training split, already in the scores' dtype (score_rows).
        self.X_sub, self.y_sub = score_rows[:TRAIN_SUBSET], data["y_train"][:TRAIN_SUBSET]
        self.eval_every = specs[0].cfg.eval_every
        self.iters = [s.cfg.model.num_iters for s in specs]
        self.val_hist: List[Dict[int, float]] = [dict() for _ in specs]
        self.train_hist: List[Dict[int, float]] = [dict() for _ in specs]
        self.step = 0  # the last check point's iteration (the ticker reads it)

    def __call__(self, progress: lm.BatchedProgress) -> List[int]:
        self.step = progress.step
        if not progress.active:
            return []
        train_acc = lm.batched_accuracy(progress.weights, self.X_sub, self.y_sub, matmul_dtype=self.scores_in).tolist()
        pruned = []
        step = progress.step
        for j, k in enumerate(progress.active):
            if step % self.eval_every and step != self.iters[k]:
                continue  # an extra check point caused by another trial's end
            acc = progress.val_acc.get(k, float("nan"))
            self.val_hist[k][step] = acc
            self.train_hist[k][step] = train_acc[j]
            trial = self.specs[k].optuna_trial
            if trial is not None and self.report and step < self.iters[k] and math.isfinite(acc):
                trial.report(acc, step)
                if self.should_prune is not None and self.should_prune(trial):
                    pruned.append(k)
        return pruned


def _outcomes(specs: List[TrialSpec], result, data: dict, score_rows: torch.Tensor, scores_in,
              checks: _CheckPoints) -> List[TrialOutcome]:
    """Each trial's outcome from the stack's result (final accuracies on the whole splits;
    score_rows: the training split in the scores' dtype ``scores_in``)."""
    cfg = specs[0].cfg
    W_all = result.W.permute(1, 0, 2)  # (D, K, C)
    final_train = lm.batched_accuracy(W_all, score_rows, data["y_train"], matmul_dtype=scores_in).tolist()
    val_pred = result.val_predictions.cpu().numpy() if result.val_predictions is not None else None  # (K, N_val)
    final_test = (lm.batched_accuracy(W_all, data["X_test"], data["y_test"], matmul_dtype=scores_in).tolist()
                  if cfg.tracking.test_eval == "all" else None)
    loss_history, W_host = result.loss_history.cpu(), result.W.detach().cpu()  # one copy each, not one per trial
    outcomes = []
    for k, spec in enumerate(specs):
        status = {"completed": COMPLETED, "pruned": PRUNED, "diverged": DIVERGED}[result.status[k]]
        iters_run = result.iterations[k]
        ok = status != DIVERGED
        out = TrialOutcome(
            number=spec.number, status=status, iterations=iters_run,
            val_acc=checks.val_hist[k].get(iters_run, float("nan")) if ok else float("nan"),
            train_acc=final_train[k] if ok else float("nan"),
            test_acc=final_test[k] if (final_test and status == COMPLETED) else None,
            weights=W_host[k].clone(),  # its own storage, not a view of the stack
            val_history=dict(checks.val_hist[k]),
            loss_curve=_loss_curve(loss_history[:iters_run, k], cfg.tracking.loss_every),
            val_predictions=val_pred[k] if (val_pred is not None and ok) else None)
        if not ok:
            out.message = (f"diverged: loss is {result.diverged_loss[k]} at iteration {iters_run - 1} "
                           f"(learning_rate={spec.cfg.model.learning_rate:g} is probably too large)")
        outcomes.append(out)
    return outcomes


def _loss_curve(losses: torch.Tensor, every: int) -> Tuple[List[int], List[float]]:
    """The train_loss points to log: every ``every`` iterations and the last one. losses: (T,)."""
    steps = list(range(0, len(losses), every))
    if len(losses) and steps[-1] != len(losses) - 1:
        steps.append(len(losses) - 1)
    return steps, (losses[steps].tolist() if steps else [])
