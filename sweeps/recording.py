"""Trained trials into their MLflow runs: each trial's config.yaml, class templates, weights and
(where asked) loss-curve and confusion images, then all the trials' metrics in one write.
The runs stay RUNNING: the ledger ends them once Optuna has been told."""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import yaml

import linear_models as lm

from .config_view import plain_config
from .render import confusion_matrix, confusion_matrix_image, line_plot
from .tracking import Tracker
from .trial import DIVERGED, NoRunError, TrialOutcome, TrialSpec


@dataclass
class TrialRecording:
    """One trained trial to record: where (``spec.run_id``), what, and the future that says when
    (and whether) it was recorded (None: the caller records synchronously)."""

    spec: TrialSpec
    outcome: TrialOutcome
    train_hist: Dict[int, float]
    done: Optional[Future] = None


def record_trials(tracker: Tracker, items: List[TrialRecording], data: dict, batch_k: int,
                  diagnostic_plots: bool) -> List[BaseException]:
    """Each trial's artifacts into its run's folder, then every trial's metrics and tags in one
    write. A trial whose artifacts or metrics cannot be written fails alone. Each
    item's ``done`` future gets its result (an item whose future was cancelled is skipped).
    Returns the failures. The runs stay RUNNING: the ledger ends them once Optuna is told."""
    t0 = time.perf_counter()
    live = [it for it in items if it.done is None or it.done.set_running_or_notify_cancel()]
    failures: List[BaseException] = []
    written, records = [], []
    jobs = [(it, _WRITERS.submit(_write_trial, tracker, it, data, batch_k, diagnostic_plots)) for it in live]
    for it, job in jobs:
        try:
            series, tags = job.result()
            written.append((it, tags))
            records.append((it.spec.run_id, series, tags))
        except Exception as e:  # noqa: BLE001 -- this trial is aborted, the others go on
            _finish(it, e, failures)
    errors = tracker.log_records(records)
    for (it, _), error in zip(written, errors):
        if error is not None:
            _finish(it, error, failures)
    written = [w for w, error in zip(written, errors) if error is None]
    for it, tags in written:
        it.outcome.logged_tags = tags
    seconds = (time.perf_counter() - t0) / max(1, len(live))
    for it in live:
        it.outcome.tracking_seconds = seconds
    for it, _ in written:
        _finish(it, None, failures)
    return failures


# Image encoding, compression and file writes release the GIL: a batch's trials are written side
# by side (about 1.7x faster on two cores when nothing else runs, as between a TPE sweep's rounds).
_WRITERS = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="write-artifacts")


def _write_trial(tracker: Tracker, it: TrialRecording, data: dict, batch_k: int, diagnostic_plots: bool):
    """One trial's artifacts; returns its metric series and final-state tags (see :func:`_metrics`)."""
    if it.spec.run_id is None:  # the caller must not tell this trial COMPLETE
        raise NoRunError(f"trial {it.spec.number} has no MLflow run to record into (creating it failed)")
    series, tags = _metrics(it.spec, it.outcome, it.train_hist, batch_k)
    _write_artifacts(tracker, it.spec, it.outcome, data, diagnostic_plots)
    return series, tags


def _finish(it: TrialRecording, error: Optional[BaseException], failures: List[BaseException]) -> None:
    if error is not None:
        failures.append(error)
    if it.done is not None and not it.done.done():
        it.done.set_exception(error) if error is not None else it.done.set_result(None)


def _metrics(spec: TrialSpec, out: TrialOutcome, train_hist: Dict[int, float], batch_k: int):
    """The run's metric series ({key: (steps, values)}) and final-state tags."""
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
    return {k: v for k, v in series.items() if v[0]}, tags


def config_yaml(cfg) -> str:
    """The resolved config as YAML, as ``OmegaConf.to_yaml(cfg, resolve=True)`` loads back, with
    libyaml's emitter (OmegaConf's pure-Python one took 30% of recording a trial)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(plain_config(cfg), Dumper=dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)


def _write_artifacts(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, data: dict,
                     diagnostic_plots: bool) -> None:
    """config.yaml, the class templates, the weights and (where asked) the diagnostic plots."""
    cfg = spec.cfg
    if not (cfg.tracking.log_images or cfg.tracking.log_weights):
        return
    with tracker.artifact_folder(spec.run_id) as tmp:
        (tmp / "config.yaml").write_text(config_yaml(cfg))
        if cfg.tracking.log_images:
            if out.status != DIVERGED:
                # Pixel-space weights: what the classifier responds to, whatever the feature transform.
                lm.save_template_grid(data["transform"].pixel_weights(out.weights), data["image_shape"],
                                      tmp / "templates.png",
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
