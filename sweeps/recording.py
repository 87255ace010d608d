"""One trained trial into its MLflow run: metrics in batches, then config.yaml, the class
templates, the weights and (where asked) the loss-curve and confusion images in one upload.
The run stays RUNNING: the ledger ends it once Optuna has been told."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict

from omegaconf import OmegaConf

import linear_models as lm

from .render import confusion_matrix, confusion_matrix_image, line_plot
from .tracking import Tracker
from .trial import DIVERGED, TrialOutcome, TrialSpec


def record_trial(tracker: Tracker, spec: TrialSpec, out: TrialOutcome, train_hist: Dict[int, float], data: dict,
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
