"""The sweep engine behind the `linear_optuna` Hydra sweeper (docs/architecture.md).

loop.py (SweepLoop) composes the cells (cells.py), opens one study per cell (opening.py,
identity.py) and hands them to the scheduler (scheduler.py), which trains every study's batch
(study_session.py) together; the ledger (ledger.py) moves each trial through its states in
Optuna and MLflow; shutdown.py turns signals into one interrupt path; finalize.py ends a study.

The names below are imported on first use: ``sweeps.engine.shutdown`` or ``.options`` alone
must not pull in the loop's heavy imports (torch, Optuna, MLflow), so that bad input is
refused in well under a second.
"""
import importlib

_EXPORTS = {"SweepLoop": ".loop", "SweeperOptions": ".options", "SweepError": ".options",
            "SweepInterrupted": ".shutdown"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
