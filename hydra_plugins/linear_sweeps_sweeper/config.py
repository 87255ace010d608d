"""Config of the `linear_optuna` sweeper (group hydra/sweeper), stored in Hydra's ConfigStore."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class LinearOptunaSweeperConf:
    """Options of hydra.sweeper. The search space is written in Hydra's override grammar:

    params:
      model.learning_rate: tag(log, interval(1e-4, 1.0))   # float, log scale
      model.num_iters: int(interval(500, 3000))            # integer, both ends included
      model.lr_decay: choice(none, cosine)                 # categorical
      model.batch_size: range(100, 501, 100)               # 100..500; stop excluded, as in Python

    Comma lists on the command line that are not in `params` (loss=svm,softmax) form an outer
    grid: one study per cell, each with the full n_trials.
    """

    _target_: str = "hydra_plugins.linear_sweeps_sweeper.linear_optuna_sweeper.LinearOptunaSweeper"
    sampler: str = "tpe"  # tpe | random | grid | cmaes | qmc | gp
    seed: Optional[int] = None  # sampler seed (None: the app's `seed`)
    # Extra Optuna sampler arguments; those nested under a sampler's name apply to it alone,
    # e.g. {tpe: {multivariate: true}, n_startup_trials: 5}.
    sampler_kwargs: Dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"  # none | median | successive_halving | hyperband
    pruner_kwargs: Dict[str, Any] = field(default_factory=dict)
    direction: str = "maximize"
    n_trials: int = 20  # the study's total, across launches and workers
    storage: Optional[str] = "sqlite:///optuna.db"  # any Optuna storage URL; null: in memory
    study_name: Optional[str] = None  # default: the experiment name (+ [cell] per outer-grid cell)
    max_failure_rate: float = 0.5  # stop the sweep when more of a worker's trials fail
    batch_size: Optional[int] = None  # trials trained together as one model (null: auto)
    max_retries: int = 1  # re-runs of a trial whose worker died or was interrupted
    heartbeat_interval: int = 10  # seconds; a trial silent for grace_period is failed + retried
    grace_period: Optional[int] = None  # default: 3 x heartbeat_interval
    shutdown_timeout: float = 10.0  # seconds a signal's cleanup may take before the process exits
    progress_bar: Optional[bool] = None  # null: on a terminal
    params: Dict[str, str] = field(default_factory=dict)
    # Conditional params: {param: "PARENT=VALUE[,VALUE...]"}, e.g.
    # {optimizer.momentum: "optimizer=momentum,nesterov"} (sweeps/conditions.py).
    conditions: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="linear_optuna", node=LinearOptunaSweeperConf, provider="linear_sweeps"
)
