"""Per-study artifacts on the parent run: the accuracy map over log lr x log reg (the
assignment's plot), Optuna's history / contour / importance plots, and a CSV of all trials."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

log = logging.getLogger(__name__)

LR_KEY, REG_KEY = "model.learning_rate", "model.reg"
MIN_TRIALS_FOR_IMPORTANCE = 8  # fANOVA importances from fewer trials are noise (and slow to fit)
CONTOUR_MAX_PARAMS = 2  # the contour is an n x n grid of panels: one readable panel at 8 x 5 inches


def accuracy_map(ax, trials, title: str, vmin=None, vmax=None):
    """Scatter of val accuracy over log10 lr x log10 reg (one point per completed trial)."""
    pts = [(t.params[LR_KEY], t.params[REG_KEY], t.value) for t in trials
           if t.state == TrialState.COMPLETE and LR_KEY in t.params and REG_KEY in t.params]
    if not pts:
        ax.set_title(f"{title}: no completed trials with lr and reg")
        return None
    lr, reg, acc = zip(*pts)
    sc = ax.scatter([math.log10(x) for x in lr], [math.log10(max(x, 1e-12)) for x in reg], c=acc, s=80,
                    cmap="viridis", vmin=vmin, vmax=vmax, edgecolors="k")
    best = max(pts, key=lambda p: p[2])
    ax.scatter([math.log10(best[0])], [math.log10(max(best[1], 1e-12))], marker="*", s=300, c="red", label=f"best {best[2]:.3f}")
    ax.set_xlabel("log10 learning rate")
    ax.set_ylabel("log10 regularization")
    ax.set_title(title)
    ax.legend(loc="best")
    return sc


def contour_params(study: optuna.Study, complete) -> List[str]:
    """The params of the contour plot: the CONTOUR_MAX_PARAMS most important ones (fANOVA) once
    there are MIN_TRIALS_FOR_IMPORTANCE completed trials, else lr and reg (or the first ones)."""
    names = list(complete[-1].distributions)
    if len(names) <= CONTOUR_MAX_PARAMS:
        return names
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            return list(optuna.importance.get_param_importances(study))[:CONTOUR_MAX_PARAMS]
        except Exception as e:  # e.g. a param that never varied
            log.info("contour params by search-space order: %s", e)
    first = [n for n in (LR_KEY, REG_KEY) if n in names]
    return (first + [n for n in names if n not in first])[:CONTOUR_MAX_PARAMS]


def _save_optuna_plot(fn, study, path: Path, margins: Optional[Dict[str, float]], **kwargs) -> bool:
    try:
        ax = fn(study, **kwargs)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        _save(fig, path, margins)
        return True
    except Exception as e:  # e.g. importance needs two params and a few completed trials
        log.info("skipped %s: %s", path.name, e)
        plt.close("all")
        return False


def _save(fig, path: Path, margins: Optional[Dict[str, float]]) -> None:
    # Fixed margins, not tight_layout: measuring every label's extent took about 40% of a report.
    fig.set_size_inches(8, 5)
    if margins is not None:  # None: the plot's own layout (a colour bar placed beside its axes)
        fig.subplots_adjust(**margins)
    fig.savefig(path, dpi=90)
    plt.close(fig)


PLOT_MARGINS = dict(left=0.1, right=0.97, bottom=0.11, top=0.92)
MAP_MARGINS = dict(left=0.1, right=1.0, bottom=0.11, top=0.92)  # the colour bar takes the right edge
IMPORTANCE_MARGINS = dict(left=0.25, right=0.97, bottom=0.11, top=0.92)  # parameter names on the y axis


def log_study_report(study: optuna.Study, tracker, parent_id: str, summary: Dict[str, Any]) -> None:
    """Write the study's plots and CSV to the parent run, with its best metrics."""
    import warnings

    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    with tracker.artifact_folder(parent_id) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration",
                                           "datetime_start", "datetime_complete"))
        df.to_csv(tmp / "trials.csv", index=False)
        fig, ax = plt.subplots()
        sc = accuracy_map(ax, trials, f"val accuracy: {study.study_name}")
        if sc is not None:
            fig.colorbar(sc, ax=ax, label="val accuracy")
        _save(fig, tmp / "accuracy_map.png", MAP_MARGINS)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            _save_optuna_plot(ovm.plot_optimization_history, study, tmp / "optimization_history.png", PLOT_MARGINS)
        # Over exactly lr x reg the accuracy map shows both parameters' effect: the contour would
        # draw it again (0.5 s), and the importances cost 1.5 s of scikit-learn import (Optuna's
        # importance module loads it) while the next round trains.
        if complete and set(complete[-1].distributions) != {LR_KEY, REG_KEY}:
            _save_optuna_plot(ovm.plot_contour, study, tmp / "contour.png", None,
                              params=contour_params(study, complete))
            if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
                _save_optuna_plot(ovm.plot_param_importances, study, tmp / "param_importances.png",
                                  IMPORTANCE_MARGINS)
    metrics = {k: v for k, v in (("best_val_acc", summary.get("best_val_acc")),
                                 ("best_test_acc", summary.get("best_test_acc"))) if v is not None}
    metrics.update({f"trials_{k.lower()}": v for k, v in summary["trials"].items()})
    tracker.log_metrics(parent_id, metrics, step=len(trials))
    if "best_params" in summary:
        tracker.set_tags(parent_id, {"best_trial": summary["best_trial"], "best_run_id": summary["best_run_id"],
                                     **{f"best.{k}": v for k, v in summary["best_params"].items()}})
