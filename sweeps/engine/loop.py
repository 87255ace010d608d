"""SweepLoop, behind the `linear_optuna` Hydra sweeper: compose and check the cells, open one
study per cell, let the scheduler run them side by side, write optimization_results.yaml.

For each outer-grid cell (e.g. loss=svm and loss=softmax) one Optuna study with the full
``n_trials``; each study has a parent MLflow run and one nested run per trial. Any number of
workers may run the same command against one storage: they share the studies and budgets.
"""
from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ..data import load_data, resolve_device
from ..search_space import plan_sweep
from ..storage import holds_no_study, import_storage_modules, make_storage
from ..study import check_sampler_space, grid_size
from ..mlflow_import import import_mlflow_in_background
from ..tracking import Tracker, redact_url
from .cells import Cell, CellComposer, check_fits_data
from .finalize import link_results, write_results
from .opening import open_study
from .options import SweeperOptions
from .scheduler import Scheduler
from .shutdown import ShutdownGuard
from .study_session import StudySession

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

# The training loop needs the GIL for a moment before each torch op; with Python's default
# 5 ms switch interval a busy recording thread stalls it (see docs/batched-trials.md).
GIL_SWITCH_INTERVAL = 1e-4


class SweepLoop:
    def __init__(self, **options: Any) -> None:
        self.options = SweeperOptions.from_hydra(options)
        self.config: Optional[DictConfig] = None
        self._trackers: Dict[str, Tracker] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
              composer: Optional[CellComposer] = None) -> None:
        """``composer``: the preflight's (its compositions are reused), else a new one."""
        self.config = config
        self.composer = composer or CellComposer(hydra_context.config_loader, config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: List[str]) -> List[Dict[str, Any]]:
        plan = plan_sweep(self.options.params, arguments, conditions=self.options.conditions)
        check_sampler_space(self.options.sampler, plan.search_space, plan.conditions)
        cells = self.composer.cells(plan)  # every cell composed and checked before any store exists
        import_storage_modules(self.options.storage)  # while the prefetch thread loads the data
        if holds_no_study(self.options.storage):  # new studies create their parent runs right away
            import_mlflow_in_background()
        self._load_data(cells)
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-trials")
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:
            with ShutdownGuard(self.options.shutdown_timeout) as guard:
                try:
                    sessions: List[StudySession] = []
                    scheduler = Scheduler(sessions, self.options, finisher, guard)
                    try:
                        self._open_sessions(cells, finisher, guard, sessions)
                    except BaseException as error:
                        scheduler.stop(error)  # the studies opened so far stop as on Ctrl-C
                        raise
                    summaries = scheduler.run()
                    link_results(sessions, summaries)
                finally:
                    # Inside the guard: after a signal or an error the watchdog bounds this wait
                    # too, and jobs of aborted trials that have not started are dropped.
                    finisher.shutdown(wait=True, cancel_futures=guard.cleaning)
        finally:
            sys.setswitchinterval(switch_interval)
        write_results(self.sweep_dir, self.options.direction, summaries)
        return summaries

    @staticmethod
    def _load_data(cells: List[Cell]) -> None:
        """Every cell's data (the launch's own was prefetched while Optuna and MLflow imported):
        a data error, or a batch larger than the training split, ends the launch before any store exists."""
        for cell in cells:
            data = load_data(cell.base.dataset, cell.base.model.dtype, resolve_device(cell.base.device.type))
            check_fits_data(cell, data["X_train"].shape[0])

    def _tracker(self, base: DictConfig) -> Tracker:
        """One Tracker per tracking config: studies that share it train their batches together."""
        key = OmegaConf.to_yaml(base.tracking, resolve=True)
        if key not in self._trackers:
            self._trackers[key] = Tracker.from_config(base.tracking)
        return self._trackers[key]

    def _open_sessions(self, cells: List[Cell], finisher, guard: ShutdownGuard, sessions: List[StudySession]) -> None:
        """Open the stores and the studies (the cells' data is loaded and checked already)."""
        o = self.options
        storage = make_storage(o.storage, o.heartbeat_interval, o.grace_seconds)
        trackers = [self._tracker(c.base) for c in cells]  # MLflow is imported on their first use
        for i, (cell, tracker) in enumerate(zip(cells, trackers)):
            n_trials = min(o.n_trials, grid_size(cell.plan.search_space)) if o.sampler == "grid" else o.n_trials
            seed = o.seed if o.seed is not None else int(cell.base.seed)
            # A signal waits until the study's session exists (its stop ends the parent run that
            # opening creates or reopens), as it waits while trials are asked.
            with guard.critical():
                opened = open_study(storage, cell, o, tracker, seed, n_trials)
                log.info("study %s: storage %s, tracking %s (experiment %s)", opened.study.study_name,
                         redact_url(o.storage), redact_url(tracker.uri), tracker.experiment_name)
                sessions.append(StudySession(opened, cell, o, self.composer, finisher, guard, position=i))
