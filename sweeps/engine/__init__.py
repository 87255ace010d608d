"""The sweep engine behind the `linear_optuna` Hydra sweeper (docs/architecture.md).

loop.py (SweepLoop) composes the cells (cells.py), opens one study per cell (opening.py,
identity.py) and hands them to the scheduler (scheduler.py), which trains every study's batch
(study_session.py) together; the ledger (ledger.py) moves each trial through its states in
Optuna and MLflow; shutdown.py turns signals into one interrupt path; finalize.py ends a study.
"""
from .loop import SweepLoop
from .options import SweeperOptions, SweepError
from .shutdown import SweepInterrupted

__all__ = ["SweepError", "SweepInterrupted", "SweepLoop", "SweeperOptions"]
