"""The outer grid's cells and their configs: compose a cell's base config (checked, with the
corners of the search space probed), then each trial's config from its params."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import (ENVIRONMENT_SECTIONS, ConfigError, check_batch_size, check_environment, check_values,
                      unknown_key_error, validate_config)
from ..config_view import CellData, ConfigView
from ..search_space import SweepPlan


@dataclass
class Cell:
    """One study's slice of the sweep: its grid overrides and composed base config."""

    overrides: List[str]  # e.g. ["loss=svm"]; [] without an outer grid
    base: DictConfig
    plan: SweepPlan
    _data: Optional[CellData] = field(default=None, init=False, repr=False)

    @property
    def data(self) -> CellData:
        """The base config resolved once, for trial configs (made on first use)."""
        if self._data is None:
            self._data = CellData(self.base)
        return self._data

    @property
    def overrides_tag(self) -> str:
        """The launch's fixed overrides and this cell's, as the ``hydra.overrides`` tag."""
        return " ".join(list(self.plan.fixed) + list(self.overrides))


class CellComposer:
    """Composes configs through Hydra's config loader (the same composition as a single run).

    A cell's base config is composed once per launch (a Hydra composition is slow): the
    preflight's composition is the loop's."""

    def __init__(self, config_loader, root_config: DictConfig):
        self._loader = config_loader
        self._root = root_config
        self._bases: Dict[tuple, DictConfig] = {}  # overrides -> composed base (never modified)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        cfg = self._loader.load_sweep_config(self._root, list(overrides))
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    def cells(self, plan: SweepPlan) -> List[Cell]:
        """Every cell, composed and checked before any store is touched."""
        return [Cell(list(cell), self._cell_config(plan, cell), plan) for cell in plan.cells]

    def _base(self, overrides: Sequence[str]) -> DictConfig:
        key = tuple(overrides)
        if key not in self._bases:
            self._bases[key] = self.compose(overrides)
        return self._bases[key]

    def _cell_config(self, plan: SweepPlan, cell: Sequence[str]) -> DictConfig:
        base = self._base(list(plan.fixed) + list(cell))
        validate_config(base)
        for key, dist in plan.search_space.items():
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                raise unknown_key_error(base, key, "search space: ")
            for corner in _corners(dist):  # every corner must be valid, or every trial would fail
                try:
                    probe = self._probe(plan, cell, base, key, corner)
                    validate_config(probe)
                except ConfigError as e:
                    raise ConfigError(f"search space {key} allows an invalid value: {e}") from None
                except Exception as e:
                    raise ConfigError(f"search space {key}: value {corner!r} does not fit the config: {e}") from None
        return base

    def _probe(self, plan: SweepPlan, cell: Sequence[str], base: DictConfig, key: str, value) -> DictConfig:
        """The cell's config with ``key=value`` (a config-group choice is composed)."""
        if "." not in key:
            return self._base(list(plan.fixed) + list(cell) + [f"{key}={value}"])
        probe = base.copy()
        OmegaConf.update(probe, key, value)
        return probe

    def trial_config(self, cell: Cell, params: Dict[str, Any]) -> Union[ConfigView, DictConfig]:
        """A trial's config: the cell's with the trial's params (config groups: composed in full).
        Usually a read-only ConfigView of plain data; a DictConfig where only OmegaConf can say."""
        if any("." not in k for k in params):  # a top-level key or config-group choice
            cfg = self.compose(list(cell.plan.fixed) + list(cell.overrides) + [f"{k}={v}" for k, v in params.items()])
            validate_config(cfg)
            return cfg
        cfg = cell.data.trial_view(params)
        if cfg is None:
            cfg = cell.base.copy()
            for k, v in params.items():
                OmegaConf.update(cfg, k, v)
        # The cell passed every check; updates of its existing keys change values only.
        check_values(cfg)
        if any(k.split(".")[0] in ENVIRONMENT_SECTIONS for k in params):
            check_environment(cfg)
        return cfg


def check_fits_data(cell: Cell, n_train: int) -> None:
    """The cell's model.batch_size, and the search space's largest, fit its training split."""
    check_batch_size(cell.base, n_train)
    dist = cell.plan.search_space.get("model.batch_size")
    if dist is not None:
        check_batch_size(cell.base, n_train, int(max(_corners(dist))))


def cuda_fit(cell: Cell, device) -> int:
    """How many of the cell's trials one stack may hold on the GPU ``device`` (options.cuda_auto_batch),
    from its free memory now (the data loaded) and the cell's largest batch, iterations and optimizer."""
    import torch

    from ..data import load_data
    from .options import cuda_auto_batch

    m, space = cell.base.model, cell.plan.search_space
    data = load_data(cell.base.dataset, m.dtype, device)

    def largest(key: str, value):
        return int(max(_corners(space[key]))) if key in space else int(value)

    optimizer = "momentum" if "optimizer.name" in space or "optimizer" in space else cell.base.optimizer.name
    free, _ = torch.cuda.mem_get_info(device)
    return cuda_auto_batch(free, data["X_train"].shape[1], len(data["class_names"]),
                           largest("model.batch_size", m.batch_size), optimizer,
                           num_iters=largest("model.num_iters", m.num_iters), element_size=data["X_train"].element_size())


def _corners(dist) -> List[Any]:
    if getattr(dist, "choices", None):  # an Optuna distribution or a ParamSpec
        return list(dist.choices)
    return [dist.low, dist.high]


def _short(v) -> str:
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def trial_run_name(loss: str, number: int, params: Dict[str, Any]) -> str:
    """``svm-007 learning_rate=1.00e-02 reg=1.00e-05``: family first, so runs sort by it."""
    return f"{loss}-{number:03d} " + " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
