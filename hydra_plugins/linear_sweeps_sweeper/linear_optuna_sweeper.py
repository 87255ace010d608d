"""The registered Sweeper: a thin shell that imports the real loop lazily.

Found two ways: Hydra's scan of the ``hydra_plugins`` namespace folder (a checkout on the path, a
compat editable or a regular install), and sweeps.app registering it explicitly before Hydra
starts (a default editable install, whose import hook Hydra's folder scan cannot see).
"""
from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .config import LinearOptunaSweeperConf  # noqa: F401  (registers the config)


class LinearOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sweeps.engine.preflight import check_launch  # light: Hydra and OmegaConf only
        from sweeps.errors import exit_on_user_error

        with exit_on_user_error():  # bad options, search space or config: one line and exit 2, at once
            composer = check_launch(self._options, hydra_context.config_loader, config)
        from sweeps.data import prefetch_data  # torch and linear_models only

        # The dataset decodes (mostly outside the GIL) while MLflow and Optuna import.
        prefetch_data(config, OmegaConf.select(config, "hydra.overrides.task", default=None) or ())
        from sweeps.engine import SweepLoop  # heavy imports (optuna, mlflow) happen here

        with exit_on_user_error():
            self._loop = SweepLoop(**self._options)
            self._loop.setup(hydra_context=hydra_context, task_function=task_function, config=config,
                             composer=composer)

    def sweep(self, arguments: List[str]) -> Optional[Any]:
        from sweeps.errors import exit_on_user_error

        with exit_on_user_error():  # bad input: one line and exit 2, as in a single run
            return self._loop.sweep(arguments)
