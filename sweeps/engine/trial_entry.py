"""One asked trial of this worker (``TrialEntry``) and the phases it moves through (``Phase``,
the transitions ``ALLOWED``); the ledger moves it (see ledger.py for the diagram)."""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import Dict, Optional

import optuna

from .. import adapter
from ..trial import TrialOutcome, TrialSpec


class Phase(enum.Enum):
    ASKED = "asked"
    RUN_CREATED = "run created"
    TRAINED = "trained"
    RECORDED = "recorded"
    TOLD = "told"
    ABORTED = "aborted"


FINAL = (Phase.TOLD, Phase.ABORTED)
ALLOWED = {
    Phase.ASKED: {Phase.RUN_CREATED, Phase.TRAINED, Phase.TOLD, Phase.ABORTED},
    Phase.RUN_CREATED: {Phase.TRAINED, Phase.ABORTED},
    Phase.TRAINED: {Phase.RECORDED, Phase.ABORTED},
    Phase.RECORDED: {Phase.TOLD, Phase.ABORTED},
    Phase.TOLD: set(),
    Phase.ABORTED: set(),
}


@dataclass(eq=False)
class TrialEntry:
    """One asked trial of this worker. ``spec.cfg`` is None when its config failed."""

    trial: optuna.Trial
    requeued: bool  # popped from the WAITING queue: a re-run of a failed trial
    spec: Optional[TrialSpec] = None
    run_name: str = ""
    run_tags: Optional[Dict[str, object]] = None
    run_params: Optional[Dict[str, object]] = None
    outcome: Optional[TrialOutcome] = None
    phase: Phase = Phase.ASKED
    creating: Optional[threading.Event] = None  # set once create_runs has written (or failed) its run

    @property
    def trial_id(self) -> int:
        return adapter.trial_id(self.trial)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def run_id(self) -> Optional[str]:
        return self.spec.run_id if self.spec is not None else None
