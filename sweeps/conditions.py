"""Conditional search spaces: a parameter that only exists for some values of another.

    hydra.sweeper.conditions:
      optimizer.momentum: optimizer=momentum,nesterov     # searched only for these optimizers
      preprocess.epsilon: preprocess=zca,pca

A conditional parameter is suggested after the others, and only when its parent's value (the
trial's own suggestion, or the config's value when the parent is not searched) is one of those
listed; otherwise the trial keeps the config's value and Optuna records no such param. Samplers
that model parameters jointly (TPE with ``group: true``) learn each condition's subspace apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

__all__ = ["Condition", "ConditionError", "parse_conditions", "unconditional", "suggest_conditional"]


class ConditionError(ValueError):
    """A hydra.sweeper.conditions entry that cannot be used; names the entry."""


@dataclass(frozen=True)
class Condition:
    """``param`` exists only when ``parent``'s value is one of ``values`` (compared as strings)."""

    param: str
    parent: str
    values: Tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.parent}={','.join(self.values)}"

    def holds(self, params: Mapping[str, Any], base: Optional[DictConfig]) -> bool:
        return _as_text(parent_value(self.parent, params, base)) in self.values


def _as_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parent_value(parent: str, params: Mapping[str, Any], base: Optional[DictConfig]):
    """The parent's value for a trial: its suggested param, else the config's (a config group's
    choice is its ``name``)."""
    if parent in params:
        return params[parent]
    value = OmegaConf.select(base, parent, default=None) if base is not None else None
    return value.get("name") if isinstance(value, DictConfig) else value


def parse_conditions(conditions: Optional[Mapping[str, Any]], search_space: Mapping[str, Any]) -> Dict[str, Condition]:
    """hydra.sweeper.conditions -> {param: Condition}, checked against the search space."""
    out: Dict[str, Condition] = {}
    for param, text in (conditions or {}).items():
        name = f"hydra.sweeper.conditions.{param}"
        if param not in search_space:
            raise ConditionError(f"{name}: {param} is not in the search space (hydra.sweeper.params)")
        parent, sep, values = str(text).partition("=")
        parent = parent.strip()
        allowed = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not parent or not allowed:
            raise ConditionError(f"{name} must be 'PARENT=VALUE[,VALUE...]', got {text!r}")
        if parent == param or parent in (conditions or {}):
            raise ConditionError(f"{name}: the parent {parent} must be an unconditional parameter, got {text!r}")
        choices = getattr(search_space.get(parent), "choices", None)
        if choices and not {_as_text(c) for c in choices} & set(allowed):
            raise ConditionError(f"{name}: {parent} never takes {', '.join(allowed)} (its choices: "
                                 f"{', '.join(map(_as_text, choices))}), so {param} would never be searched")
        out[param] = Condition(param, parent, allowed)
    return out


def unconditional(search_space: Mapping[str, Any], conditions: Mapping[str, Condition]) -> Dict[str, Any]:
    """The search space without its conditional parameters (what every trial suggests)."""
    return {k: d for k, d in search_space.items() if k not in conditions}


def suggest_conditional(trial, search_space: Mapping[str, Any], conditions: Mapping[str, Condition],
                        base: Optional[DictConfig]) -> None:
    """Suggest each conditional parameter whose condition holds for ``trial``'s params."""
    for param, condition in conditions.items():
        if condition.holds(trial.params, base):
            _suggest(trial, param, search_space[param])


def _suggest(trial, name: str, dist) -> Any:
    """Optuna's public suggest_* for a distribution."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
