"""Train a batch of trials and record each one: the code both the sweeper and a single run use.

Trials whose configs differ only in learning rate, regularization, iteration count and
learning-rate decay train together as one stacked model (linear_models' batched trainer);
other differences (loss, batch size, dtype, dataset, seed) split the batch into groups.

Every trial starts from the same initial weights and sees the same minibatch sequence for a
given seed, so a trial's result depends on its own params and the seed only, never on which
other trials shared its batch: batched and sequential sweeps agree.
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import linear_models as lm

from .data import load_data, matmul_dtype, matmul_dtype_name, resolve_device
from .render import confusion_matrix, confusion_matrix_image, line_plot
from .tracking import Tracker

log = logging.getLogger(__name__)

# Keys that may differ between trials trained as one stacked model.
BATCHABLE_KEYS = ("model.learning_rate", "model.reg", "model.num_iters", "model.lr_decay")
TRAIN_SUBSET = 2_000  # periodic train accuracy is measured on this many fixed training examples

COMPLETED, PRUNED, DIVERGED, ERROR = "completed", "pruned", "diverged", "error"


@dataclass
class TrialSpec:
    """One trial to run: its composed config, Optuna trial (if any) and MLflow run id."""

    cfg: DictConfig
    number: int = 0
    optuna_trial: Any = None  # optuna.Trial, for intermediate reports and pruning
    run_id: Optional[str] = None


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
    recorded: Optional[Future] = None  # with an executor: done once metrics and artifacts are in MLflow


def group_key(cfg: DictConfig) -> str:
    """Configs with the same key can share one stacked model."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for dotted in BATCHABLE_KEYS:
        section, name = dotted.split(".")
        plain.get(section, {}).pop(name, None)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


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
               devices: Optional[Sequence[torch.device]] = None, executor=None) -> List[TrialOutcome]:
    """Train ``specs`` (grouped into stacked models) and log each to its MLflow run.

    The MLflow runs stay RUNNING: the caller ends them once Optuna has been told, so both
    stores agree. ``should_prune(optuna_trial)`` is asked at each validation check.
    ``devices``: where to train (default: from each config; every GPU of a multi-GPU machine).
    ``executor``: record trials there (e.g. a background thread) instead of before returning;
    each outcome's ``recorded`` future then tells when (and whether) its recording is done.
    """
    groups: Dict[str, List[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec.cfg), []).append(i)
    # Several GPUs: each group is split into one stacked model per device, trained side by side.
    jobs = []
    for indices in groups.values():
        devs = list(devices) if devices else available_devices(specs[indices[0]].cfg.device.type)
        n = min(len(devs), len(indices))
        jobs += [(indices[j::n], devs[j]) for j in range(n)]
    outcomes: List[Optional[TrialOutcome]] = [None] * len(specs)

    def run(job):
        indices, device = job
        members = [specs[i] for i in indices]
        try:
            results = _run_group(members, device, tracker, report_intermediate, should_prune, executor)
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
               should_prune: Optional[Callable[[Any], bool]], executor=None) -> List[TrialOutcome]:
    cfg = specs[0].cfg
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
        cfg.loss.name, X, y,
        [s.cfg.model.learning_rate for s in specs], [s.cfg.model.reg for s in specs], iters,
        cfg.model.batch_size, X_val=X_val, y_val=y_val, eval_every=eval_every, generator=gen,
        W_init=W_init, lr_schedules=[s.cfg.model.lr_decay for s in specs],
        lr_step_every=cfg.model.lr_decay_every, lr_gamma=cfg.model.lr_decay_gamma,
        matmul_dtype=mm_dtype, callback=on_check)
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
            weights=result.W[k].detach().cpu(), val_history=dict(val_hist[k]))
        if status == DIVERGED:
            lr = spec.cfg.model.learning_rate
            out.message = (f"diverged: loss is {result.diverged_loss[k]} at iteration {iters_run - 1} "
                           f"(learning_rate={lr:g} is probably too large)")
        # With an executor the run may still be being created there: its job runs first.
        if tracker is not None and (spec.run_id is not None or executor is not None):
            args = (tracker, spec, out, loss_history[:iters_run, k], train_hist[k], data,
                    val_pred[k] if val_pred is not None else None, K)
            if executor is None:
                _record_trial(*args)
            else:
                out.recorded = executor.submit(_record_trial, *args)
        outcomes.append(out)
    return outcomes


def _record_trial(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, losses: torch.Tensor,
                  train_hist: Dict[int, float], data: dict, val_pred: Optional[np.ndarray], batch_k: int) -> None:
    """Metrics in batches, then the artifacts in one upload. The run stays RUNNING."""
    if spec.run_id is None:  # the caller must not tell this trial COMPLETE
        raise RuntimeError(f"trial {spec.number} has no MLflow run to record into (creating it failed)")
    t0 = time.perf_counter()
    try:
        _record(tracker, spec, out, losses, train_hist, data, val_pred, batch_k)
    finally:
        out.tracking_seconds = time.perf_counter() - t0


def _record(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, losses: torch.Tensor,
            train_hist: Dict[int, float], data: dict, val_pred: Optional[np.ndarray], batch_k: int) -> None:
    cfg = spec.cfg
    every = cfg.tracking.loss_every
    steps = list(range(0, len(losses), every))
    if len(losses) and steps[-1] != len(losses) - 1:
        steps.append(len(losses) - 1)
    loss_values = losses[steps].tolist() if steps else []
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
    tracker.log_series(spec.run_id, {k: v for k, v in series.items() if v[0]})  # one request
    if not (cfg.tracking.log_images or cfg.tracking.log_weights):
        return
    with tracker.artifact_folder(spec.run_id) as tmp:
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        title = f"{cfg.loss.name} #{spec.number}  lr={cfg.model.learning_rate:.2e} reg={cfg.model.reg:.2e}"
        if cfg.tracking.log_images:
            finite = [(s, v) for s, v in zip(steps, loss_values) if math.isfinite(v)]
            line_plot(tmp / "loss_curve.png", {"train loss": ([s for s, _ in finite], [v for _, v in finite])},
                      title=title, xlabel="iteration", ylabel="loss")
            if out.status != DIVERGED:
                lm.save_template_grid(out.weights, data["image_shape"], tmp / "templates.png",
                                      data["class_names"], title=title)
                if val_pred is not None:
                    C = len(data["class_names"])
                    cm = confusion_matrix(data["y_val"].cpu().numpy(), val_pred, C)
                    confusion_matrix_image(tmp / "confusion_val.png", cm, data["class_names"],
                                           title=f"validation confusion (acc {out.val_acc:.3f})")
        if cfg.tracking.log_weights and out.status != DIVERGED:
            clf = lm.classifier_for_loss(cfg.loss.name)(out.weights)
            clf.save(tmp / "weights.pt")
