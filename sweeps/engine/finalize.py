"""The end of a study: its best trial and that trial's test accuracy, this worker's diagnostic
plots, the study report, the parent run's end; and the launch's optimization_results.yaml."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml
from optuna.trial import TrialState

from ..data import load_features, matmul_precision, resolve_device, score_dtype
from ..recording import save_diagnostic_plots
from ..storage import study_lock
from ..study import ATTR_RUN_ID, counted_trials
from ..tracking import Tracker
from . import faults

log = logging.getLogger(__name__)

ATTR_FINALIZED = "linear_sweeps_finalized_trials"


def import_report_modules() -> None:
    """Import what the studies' reports draw with (matplotlib and Optuna's plots, 0.3-1 s of
    Python), so that the reports after the last batch do not wait for it."""
    from optuna.visualization import matplotlib  # noqa: F401

    from .. import study_report  # noqa: F401


def finalize_study(session) -> Dict[str, Any]:
    """Summarize a study whose budget is used (runs on the finisher after its last tell)."""
    from ..study_report import log_study_report

    faults.check("finalize")
    study, tracker = session.study, session.tracker
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in counted_trials(trials))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary: Dict[str, Any] = {"study_name": study.study_name, "n_trials": session.n_trials, "trials": counts,
                               "mlflow_parent_run_id": session.parent_id}
    completed = any(t.state == TrialState.COMPLETE for t in trials)
    with study_lock(session.storage, study.study_name):
        if completed:
            best = study.best_trial
            summary.update(best_trial=best.number, best_val_acc=best.value, best_params=dict(best.params),
                           best_run_id=best.user_attrs.get(ATTR_RUN_ID))
            local = session.ledger.best
            W = local[1].weights if local and local[0].number == best.number else None
            summary["best_test_acc"] = best_test_accuracy(best, _trial_config(session, best), tracker, W)
        write_report = study.user_attrs.get(ATTR_FINALIZED) != len(trials)  # one worker per study state
        if write_report:
            study.set_user_attr(ATTR_FINALIZED, len(trials))
    if session.ledger.best is not None:
        plot_local_best(tracker, *session.ledger.best)
    if write_report:  # outside the lock: plots take seconds, and other studies' asks wait on it
        log_study_report(study, tracker, session.parent_id, summary)
    tracker.end_run(session.parent_id, "FINISHED")
    if completed:
        log.info("study %s: best val_acc %.4f (trial %d, %s); its test_acc %.4f", study.study_name,
                 summary["best_val_acc"], summary["best_trial"], summary["best_params"], summary["best_test_acc"])
    return summary


def _trial_config(session, trial):
    """The config ``trial`` trained with (its feature transform scores its test accuracy); the
    cell's own when its params no longer compose (a study made with another search space)."""
    try:
        return session.composer.trial_config(session.cell, dict(trial.params))
    except Exception as e:  # noqa: BLE001 -- the summary still gets its test accuracy
        log.warning("trial %d's params do not compose with this launch's config (%s); its test accuracy "
                    "uses the launch's config", trial.number, e)
        return session.cell.base


def plot_local_best(tracker: Tracker, spec, out) -> None:
    """The diagnostic plots (loss curve, confusion) of this worker's best trial of the study,
    when tracking.diagnostic_plots=best kept them off the other trials."""
    t = spec.cfg.tracking
    if not t.log_images or t.diagnostic_plots != "best":
        return
    cfg = spec.cfg
    try:
        data = load_features(cfg, resolve_device(cfg.device.type))
        with tracker.artifact_folder(spec.run_id) as tmp:
            save_diagnostic_plots(tmp, spec, out, data)
    except Exception:  # the study's summary matters more than two images
        log.exception("could not draw the diagnostic plots of trial %d", spec.number)


def best_test_accuracy(best, cfg, tracker: Tracker, W: Optional[torch.Tensor]) -> float:
    """Test accuracy of the study's best trial (selection was by validation accuracy), whose
    config is ``cfg``. ``W`` (D, C): its weights when this worker trained it, else read from its run."""
    import linear_models as lm

    run_id = best.user_attrs.get(ATTR_RUN_ID)
    run = tracker.get_run(run_id)
    if "test_acc" in run.data.metrics:
        return run.data.metrics["test_acc"]
    device = resolve_device(cfg.device.type)
    data = load_features(cfg, device)
    if W is None:  # trained by another worker: read its saved weights
        from mlflow.exceptions import MlflowException

        try:
            with tempfile.TemporaryDirectory() as tmp:
                W = lm.load_classifier(tracker.download_artifact(run_id, "weights.pt", tmp)).W
        except (MlflowException, OSError) as e:  # e.g. tracking.log_weights=false
            log.warning("no test_acc for trial %d here: its weights are not in its run (%s); the worker "
                        "that trained it logs it", best.number, e)
            return float("nan")
    W = W.to(device, data["X_test"].dtype).unsqueeze(1)  # (D, 1, C); scored like the trials' evaluations
    with matmul_precision(cfg.model, device):
        acc = float(lm.batched_accuracy(W, data["X_test"], data["y_test"], matmul_dtype=score_dtype(cfg.model, device))[0])
    tracker.log_metrics(run_id, {"test_acc": acc}, step=int(run.data.metrics.get("iterations", 0)))
    tracker.set_tags(run_id, {"test_acc_of": "best trial of its study (selected by val_acc)"})
    return acc


def edge_notes(best_params: Dict[str, Any], search_space: Dict[str, Any], tolerance: float = 0.05) -> List[str]:
    """Where the best trial sits at the edge of a numeric search range (within ``tolerance`` of
    its width, on the log scale for log ranges): the optimum may lie beyond that bound."""
    import math

    notes = []
    for key, value in best_params.items():
        dist = search_space.get(key)
        low, high = getattr(dist, "low", None), getattr(dist, "high", None)
        if low is None or high is None or not isinstance(value, (int, float)) or high <= low:
            continue
        scale = (lambda x: math.log(x)) if getattr(dist, "log", False) else (lambda x: x)
        position = (scale(value) - scale(low)) / (scale(high) - scale(low))
        if position <= tolerance:
            notes.append(f"{key}={value:.3g} is at the lower bound {low:g} of its search range")
        elif position >= 1 - tolerance:
            notes.append(f"{key}={value:.3g} is at the upper bound {high:g} of its search range")
    return notes


def link_results(sessions, summaries: List[Dict[str, Any]]) -> None:
    """A URL that opens each study's runs table ranked by val_acc (in the summary, and on the
    parent run as a tag and its description); the `mlflow ui` command for an embedded store."""
    from ..ui_link import results_link

    links: Dict[int, tuple] = {}
    for session, summary in zip(sessions, summaries):
        tracker = session.tracker
        if id(tracker) not in links:
            try:
                links[id(tracker)] = results_link(tracker.uri, tracker.experiment_id, client=tracker.client)
            except Exception as e:  # noqa: BLE001 -- the results matter more than the link
                log.warning("no MLflow link: %s", e)
                links[id(tracker)] = (None, None)
        url, command = links[id(tracker)]
        summary["edge"] = edge_notes(summary.get("best_params", {}), session.cell.plan.search_space)
        if url:
            summary["mlflow_url"] = url
            summary["mlflow_ui_command"] = command
            tracker.set_tags(session.parent_id, {"linear_sweeps.results_url": url,
                                                 "mlflow.note.content": f"{summary_line(summary)}\n\n{url}"})


def summary_line(s: Dict[str, Any]) -> str:
    t = s["trials"]
    counts = f"{t['COMPLETE']} complete, {t['PRUNED']} pruned, {t['FAIL']} failed"
    if "best_val_acc" not in s:
        return f"{s['study_name']}: no completed trial ({counts})"
    params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                       for k, v in s["best_params"].items())
    return (f"{s['study_name']}: best val_acc {s['best_val_acc']:.4f}, its test_acc {s['best_test_acc']:.4f} "
            f"({params}); trials: {counts}")


def write_results(sweep_dir: Path, direction: str, summaries: List[Dict[str, Any]]) -> None:
    """optimization_results.yaml in the sweep folder, and a summary per study on the console."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    clean = [{k: _plain(v) for k, v in s.items()} for s in summaries]
    with open(sweep_dir / "optimization_results.yaml", "w") as fh:
        yaml.safe_dump({"direction": direction, "metric": "val_acc", "studies": clean}, fh, sort_keys=False)
    for s in summaries:
        print(summary_line(s))
        for note in s.get("edge", []):
            print(f"  note: {note}: widen it to see whether a better value lies beyond")
    urls = {s["mlflow_url"]: s.get("mlflow_ui_command") for s in summaries if s.get("mlflow_url")}
    for url, command in urls.items():
        if command:
            print(f"Browse the runs: {command}   then open {url}")
        else:
            print(f"Browse the runs: {url}")
    print(f"Results: {sweep_dir / 'optimization_results.yaml'}")


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (float, int, str, bool)) or v is None:
        return v
    return str(v)
