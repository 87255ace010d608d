"""A trained trial's final state, in Optuna's terms and in MLflow's (status and tags)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

from optuna.trial import TrialState

from ..tracking import TAG_FAILURE, TAG_TRIAL_STATE, mlflow_status
from ..trial import COMPLETED, PRUNED, TrialOutcome


def final_state(out: TrialOutcome) -> Tuple[TrialState, Optional[str]]:
    """(Optuna state, failure reason or None) of a trained trial."""
    if out.status == COMPLETED and math.isfinite(out.val_acc):
        return TrialState.COMPLETE, None
    if out.status == PRUNED:
        return TrialState.PRUNED, None
    return TrialState.FAIL, out.message or f"error: {out.status}: no finite validation accuracy"


def run_status(out: TrialOutcome) -> str:
    """The MLflow status of a trained trial's run."""
    state, reason = final_state(out)
    return mlflow_status(state.name, reason)


def state_tags(state: str, reason: Optional[str]) -> Dict[str, str]:
    """The MLflow tags of a trial's final state (``state``: an Optuna state name)."""
    tags = {TAG_TRIAL_STATE: state}
    if reason:
        tags[TAG_FAILURE] = reason
    return tags


def final_state_tags(out: TrialOutcome) -> Dict[str, str]:
    state, reason = final_state(out)
    return state_tags(state.name, reason)
