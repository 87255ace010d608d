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

from ..data import load_data, matmul_dtype, resolve_device
from ..recording import save_diagnostic_plots
from ..storage import study_lock
from ..study import ATTR_RUN_ID, counted_trials
from ..tracking import Tracker
from . import faults

log = logging.getLogger(__name__)

ATTR_FINALIZED = "linear_sweeps_finalized_trials"


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
            summary["best_test_acc"] = best_test_accuracy(best, session.cell.base, tracker, W)
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


def plot_local_best(tracker: Tracker, spec, out) -> None:
    """The diagnostic plots (loss curve, confusion) of this worker's best trial of the study,
    when tracking.diagnostic_plots=best kept them off the other trials."""
    t = spec.cfg.tracking
    if not t.log_images or t.diagnostic_plots != "best":
        return
    cfg = spec.cfg
    try:
        data = load_data(cfg.dataset, cfg.model.dtype, resolve_device(cfg.device.type))
        with tracker.artifact_folder(spec.run_id) as tmp:
            save_diagnostic_plots(tmp, spec, out, data)
    except Exception:  # the study's summary matters more than two images
        log.exception("could not draw the diagnostic plots of trial %d", spec.number)


def best_test_accuracy(best, base, tracker: Tracker, W: Optional[torch.Tensor]) -> float:
    """Test accuracy of the study's best trial (selection was by validation accuracy).
    ``W`` (D, C): its weights when this worker trained it, else read from its run."""
    import linear_models as lm

    run_id = best.user_attrs.get(ATTR_RUN_ID)
    run = tracker.get_run(run_id)
    if "test_acc" in run.data.metrics:
        return run.data.metrics["test_acc"]
    device = resolve_device(base.device.type)
    data = load_data(base.dataset, base.model.dtype, device)
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
    acc = float(lm.batched_accuracy(W, data["X_test"], data["y_test"], matmul_dtype=matmul_dtype(base.model, device))[0])
    tracker.log_metrics(run_id, {"test_acc": acc}, step=int(run.data.metrics.get("iterations", 0)))
    tracker.set_tags(run_id, {"test_acc_of": "best trial of its study (selected by val_acc)"})
    return acc


def write_results(sweep_dir: Path, direction: str, summaries: List[Dict[str, Any]]) -> None:
    """optimization_results.yaml in the sweep folder, and one console line per study."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    clean = [{k: _plain(v) for k, v in s.items()} for s in summaries]
    with open(sweep_dir / "optimization_results.yaml", "w") as fh:
        yaml.safe_dump({"direction": direction, "metric": "val_acc", "studies": clean}, fh, sort_keys=False)
    for s in summaries:
        if "best_val_acc" in s:
            print(f"[{s['study_name']}] best val_acc={s['best_val_acc']:.4f} test_acc={s['best_test_acc']:.4f} "
                  f"params={s['best_params']} trials={s['trials']}")


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (float, int, str, bool)) or v is None:
        return v
    return str(v)
