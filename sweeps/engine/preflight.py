"""What a sweep checks before its heavy imports (torch, Optuna, MLflow): the sweeper options,
the storage URL, the search space and every outer-grid cell's config, corners included.

Run by the plugin's setup, so that bad input is refused in well under a second and before any
store, study, run or folder exists; the loop checks the same again with the real Optuna
distributions. Also says, once, what a launch would not expect (a grid smaller than n_trials).
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from ..db_urls import database_url
from ..search_space import SweepPlan, check_sampler_space, grid_size, plan_sweep
from .cells import CellComposer
from .options import SweeperOptions

log = logging.getLogger(__name__)


def check_launch(options: Dict[str, Any], config_loader, config: DictConfig) -> CellComposer:
    """The composer that composed and checked every cell (the loop's, which reuses its
    compositions), once every check passed (ConfigError / SearchSpaceError otherwise)."""
    opts = SweeperOptions.from_hydra(options)
    if opts.storage is not None:
        database_url(opts.storage, "hydra.sweeper.storage")
    task = OmegaConf.select(config, "hydra.overrides.task", default=None)
    arguments = [] if task is None else OmegaConf.to_container(task, resolve=False)  # as Hydra passes them
    plan = plan_sweep(opts.params, arguments, distributions=False, conditions=opts.conditions)
    check_sampler_space(opts.sampler, plan.search_space, plan.conditions)
    composer = CellComposer(config_loader, config)
    composer.cells(plan)
    say_grid_size(opts, plan)
    return composer


def say_grid_size(opts: SweeperOptions, plan: SweepPlan) -> None:
    if opts.sampler != "grid":
        return
    points = grid_size(plan.search_space)
    if points < opts.n_trials:
        each = "each study" if len(plan.cells) > 1 else "the study"
        log.warning("the grid has %d points: %s runs %d trials, not %d (hydra.sweeper.n_trials)", points, each,
                    points, opts.n_trials)
