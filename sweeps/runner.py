"""Train a batch of trials and record each one: the code both the sweeper and a single run use.

Trials whose configs differ only in loss (SVM or softmax), learning rate, regularization,
iteration count and learning-rate decay train together as one stacked model (linear_models'
batched trainer: the two matmuls of a step are shared, each loss has its head); other
differences (batch size, dtype, dataset, seed) split the batch into groups.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import linear_models as lm

from .data import load_data, matmul_dtype, matmul_dtype_name, resolve_device
from .render import confusion_matrix, confusion_matrix_image, line_plot
from .tracking import Tracker

log = logging.getLogger(__name__)

# Keys that may differ between trials trained as one stacked model.
BATCHABLE_KEYS = ("loss.name", "model.learning_rate", "model.reg", "model.num_iters", "model.lr_decay")
TRAIN_SUBSET = 2_000  # periodic train accuracy is measured on this many fixed training examples

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


def group_key(cfg: DictConfig) -> str:
    """Configs with the same key can share one stacked model.

    Compared unresolved (interpolations as written; 7x cheaper than resolving, and asked once
    per trial on the sweep's critical path): configs that are equal unresolved resolve equally.
    """
    plain = OmegaConf.to_container(cfg, resolve=False)
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
        "matmul_dtype": matmul_dtype_name(m, device), "validation_ratio": cfg.dataset.validation_ratio,
    }


def run_trials(specs: Sequence[TrialSpec], tracker: Optional[Tracker], *, report_intermediate: bool = False,
               should_prune: Optional[Callable[[Any], bool]] = None,
               devices: Optional[Sequence[torch.device]] = None, executor=None,
               diagnostic_plots: Optional[bool] = True) -> List[TrialOutcome]:
    """Train ``specs`` (grouped into stacked models) and log each to its MLflow run.

    The MLflow runs stay RUNNING: the caller ends them once Optuna has been told, so both
    stores agree. ``should_prune(optuna_trial)`` is asked at each validation check.
    ``devices``: where to train (default: from each config; every GPU of a multi-GPU machine).
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
    # Several GPUs: each group is split into one stacked model per device, trained side by side.
    jobs = []
    for indices in groups.values():
        indices.sort(key=lambda i: specs[i].cfg.loss.name)  # one loss head per loss (stable sort)
        devs = list(devices) if devices else available_devices(specs[indices[0]].cfg.device.type)
        n = min(len(devs), len(indices))
        jobs += [(indices[j::n], devs[j]) for j in range(n)]
    outcomes: List[Optional[TrialOutcome]] = [None] * len(specs)

    def run(job):
        indices, device = job
        members = [specs[i] for i in indices]
        try:
            results = _run_group(members, device, tracker, report_intermediate, should_prune, executor,
                                 diagnostic_plots)
        except Exception as e:  # a broken group fails its trials, not the sweep
            log.exception("trials %s failed", [s.number for s in members])
            results = [TrialOutcome(s.number, ERROR, message=f"error: {type(e).__name__}: {e}") for s in members]
        for i, r in zip(indices, results):
            outcomes[i] = r

    by_device: Dict[str, list] = {}
    for job in jobs:
        by_device.setdefault(str(job[1]), []).append(job)
    if len(by_device) <= 1:
        for job in jobs:
            run(job)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(by_device)) as pool:  # torch releases the GIL in its kernels
            list(pool.map(lambda device_jobs: [run(j) for j in device_jobs], by_device.values()))
    return outcomes  # type: ignore[return-value]


def available_devices(kind: str) -> List[torch.device]:
    """Every GPU for cuda/auto on a multi-GPU machine, else the one resolved device."""
    device = resolve_device(kind)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device]


def _run_group(specs: List[TrialSpec], device: torch.device, tracker: Optional[Tracker], report_intermediate: bool,
               should_prune: Optional[Callable[[Any], bool]], executor=None,
               diagnostic_plots: Optional[bool] = True) -> List[TrialOutcome]:
    cfg = specs[0].cfg
    if diagnostic_plots is None:
        diagnostic_plots = cfg.tracking.diagnostic_plots == "all"
    data = load_data(cfg.dataset, cfg.model.dtype, device)
    X, y = data["X_train"], data["y_train"]
    X_val, y_val = data["X_val"], data["y_val"]
    sub = torch.arange(min(TRAIN_SUBSET, X.shape[0]), device=device)
    X_sub, y_sub = X[sub], y[sub]
    K = len(specs)
    eval_every = cfg.eval_every
    iters = [s.cfg.model.num_iters for s in specs]

    # Same initial W and minibatch stream for every trial of this seed (see module docstring).
    gen = lm.make_generator(device, cfg.seed)
    num_classes = len(data["class_names"])
    W0 = lm.init_weights(X.shape[1], num_classes, like=X, scale=cfg.model.init_scale, generator=gen)
    W_init = W0.unsqueeze(1).expand(-1, K, -1).contiguous()

    val_hist: List[Dict[int, float]] = [dict() for _ in specs]
    train_hist: List[Dict[int, float]] = [dict() for _ in specs]

    # Scores for accuracies use the training matmuls' precision too (bf16: half the time).
    mm_dtype = matmul_dtype(cfg.model, device)
    if mm_dtype is not None:
        X_sub = X_sub.to(mm_dtype)  # scored at every check point: converted once

    def on_check(progress: lm.BatchedProgress):
        if not progress.active:
            return []
        train_acc = lm.batched_accuracy(progress.weights, X_sub, y_sub, matmul_dtype=mm_dtype).tolist()
        pruned = []
        for j, k in enumerate(progress.active):
            step = progress.step
            if step % eval_every and step != iters[k]:
                continue  # an extra check point caused by another trial's end
            acc = progress.val_acc.get(k, float("nan"))
            val_hist[k][step] = acc
            train_hist[k][step] = train_acc[j]
            trial = specs[k].optuna_trial
            if trial is not None and report_intermediate and step < iters[k] and math.isfinite(acc):
                trial.report(acc, step)
                if should_prune is not None and should_prune(trial):
                    pruned.append(k)
        return pruned

    start = time.perf_counter()
    result = lm.train_linear_classifiers_batched(
        [s.cfg.loss.name for s in specs], X, y,
        [s.cfg.model.learning_rate for s in specs], [s.cfg.model.reg for s in specs], iters,
        cfg.model.batch_size, X_val=X_val, y_val=y_val, eval_every=eval_every, generator=gen,
        W_init=W_init, lr_schedules=[s.cfg.model.lr_decay for s in specs],
        lr_step_every=cfg.model.lr_decay_every, lr_gamma=cfg.model.lr_decay_gamma,
        matmul_dtype=mm_dtype, loss_every=cfg.tracking.loss_every, callback=on_check)
    W_all = result.W.permute(1, 0, 2)  # (D, K, C)
    final_train = lm.batched_accuracy(W_all, X, y, matmul_dtype=mm_dtype).tolist()
    val_pred = result.val_predictions.cpu().numpy() if result.val_predictions is not None else None  # (K, N_val)
    test_all = cfg.tracking.test_eval == "all"
    final_test = (lm.batched_accuracy(W_all, data["X_test"], data["y_test"], matmul_dtype=mm_dtype).tolist()
                  if test_all else None)
    train_seconds = (time.perf_counter() - start) / K  # amortized over the batch
    loss_history = result.loss_history.cpu()

    outcomes = []
    for k, spec in enumerate(specs):
        status = {"completed": COMPLETED, "pruned": PRUNED, "diverged": DIVERGED}[result.status[k]]
        iters_run = result.iterations[k]
        last_val = val_hist[k].get(iters_run, float("nan")) if status != DIVERGED else float("nan")
        out = TrialOutcome(
            number=spec.number, status=status, iterations=iters_run, seconds=train_seconds,
            val_acc=last_val, train_acc=final_train[k] if status != DIVERGED else float("nan"),
            test_acc=final_test[k] if (final_test and status == COMPLETED) else None,
            weights=result.W[k].detach().cpu().clone(),  # its own storage, not a view of the stack
            val_history=dict(val_hist[k]),
            loss_curve=_loss_curve(loss_history[:iters_run, k], cfg.tracking.loss_every),
            val_predictions=val_pred[k] if (val_pred is not None and status != DIVERGED) else None)
        if status == DIVERGED:
            lr = spec.cfg.model.learning_rate
            out.message = (f"diverged: loss is {result.diverged_loss[k]} at iteration {iters_run - 1} "
                           f"(learning_rate={lr:g} is probably too large)")
        # With an executor the run may still be being created there: its job runs first.
        if tracker is not None and (spec.run_id is not None or executor is not None):
            args = (tracker, spec, out, train_hist[k], data, K, diagnostic_plots)
            if executor is None:
                _record_trial(*args)
            else:
                out.recorded = executor.submit(_record_trial, *args)
        outcomes.append(out)
    return outcomes


def _loss_curve(losses: torch.Tensor, every: int) -> Tuple[List[int], List[float]]:
    """The train_loss points to log: every ``every`` iterations and the last one. losses: (T,)."""
    steps = list(range(0, len(losses), every))
    if len(losses) and steps[-1] != len(losses) - 1:
        steps.append(len(losses) - 1)
    return steps, (losses[steps].tolist() if steps else [])


def _record_trial(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, train_hist: Dict[int, float], data: dict,
                  batch_k: int, diagnostic_plots: bool) -> None:
    """Metrics in batches, then the artifacts in one upload. The run stays RUNNING."""
    if spec.run_id is None:  # the caller must not tell this trial COMPLETE
        raise RuntimeError(f"trial {spec.number} has no MLflow run to record into (creating it failed)")
    t0 = time.perf_counter()
    try:
        _record(tracker, spec, out, train_hist, data, batch_k, diagnostic_plots)
    finally:
        out.tracking_seconds = time.perf_counter() - t0


def _record(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, train_hist: Dict[int, float], data: dict,
            batch_k: int, diagnostic_plots: bool) -> None:
    cfg = spec.cfg
    steps, loss_values = out.loss_curve
    train_steps, train_values = list(train_hist)[:-1], list(train_hist.values())[:-1]  # last: whole split
    final = {"trial_seconds": out.seconds, "iterations": out.iterations, "trials_in_batch": batch_k}
    if out.status != DIVERGED:
        train_steps, train_values = train_steps + [out.iterations], train_values + [out.train_acc]
    if out.test_acc is not None:
        final["test_acc"] = out.test_acc
    series = {
        "train_loss": (steps, loss_values),
        "val_acc": (list(out.val_history), list(out.val_history.values())),
        "train_acc": (train_steps, train_values),
        **{key: ([out.iterations], [value]) for key, value in final.items()},
    }
    tags = spec.record_tags(out) if spec.record_tags is not None else {}
    tracker.log_series(spec.run_id, {k: v for k, v in series.items() if v[0]}, tags=tags)  # one request
    out.logged_tags = tags
    if not (cfg.tracking.log_images or cfg.tracking.log_weights):
        return
    with tracker.artifact_folder(spec.run_id) as tmp:
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.tracking.log_images:
            if out.status != DIVERGED:
                lm.save_template_grid(out.weights, data["image_shape"], tmp / "templates.png",
                                      data["class_names"], title=_title(spec))
            if diagnostic_plots:
                save_diagnostic_plots(tmp, spec, out, data)
        if cfg.tracking.log_weights and out.status != DIVERGED:
            clf = lm.classifier_for_loss(spec.cfg.loss.name)(out.weights)
            clf.save(tmp / "weights.pt")


def save_diagnostic_plots(folder, spec: TrialSpec, out: TrialOutcome, data: dict) -> None:
    """loss_curve.png and (for a trial that did not diverge) confusion_val.png into ``folder``."""
    folder = Path(folder)
    finite = [(s, v) for s, v in zip(*out.loss_curve) if math.isfinite(v)]
    line_plot(folder / "loss_curve.png", {"train loss": ([s for s, _ in finite], [v for _, v in finite])},
              title=_title(spec), xlabel="iteration", ylabel="loss")
    if out.val_predictions is not None:
        names = data["class_names"]
        cm = confusion_matrix(data["y_val"].cpu().numpy(), out.val_predictions, len(names))
        confusion_matrix_image(folder / "confusion_val.png", cm, names,
                               title=f"validation confusion (acc {out.val_acc:.3f})")


def _title(spec: TrialSpec) -> str:
    m = spec.cfg.model
    return f"{spec.cfg.loss.name} #{spec.number}  lr={m.learning_rate:.2e} reg={m.reg:.2e}"
