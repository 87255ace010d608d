"""Hydra override grammar -> Optuna distributions, grid values and the outer grid.

Bound convention (one for every sampler):
  interval(a, b)     a <= x <= b, a float (both ends included)
  int(interval(a, b)) the same for integers
  range(a, b, s)     a, a+s, ... < b (stop excluded, as in Python and Hydra's basic sweeper)
  choice(x, y, ...)  one of the listed values
  tag(log, ...)      sample on a log scale (interval only)

Parsing and every check need Hydra's parser only (a :class:`ParamSpec` per parameter): the
sweeper refuses a bad search space before Optuna is imported; ``plan_sweep`` then builds the
Optuna distributions.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

from .conditions import Condition, ConditionError, parse_conditions

__all__ = ["ParamSpec", "SearchSpaceError", "SweepPlan", "check_sampler_space", "distribution_from_override",
           "grid_size", "grid_values", "param_spec", "plan_sweep"]


class SearchSpaceError(ValueError):
    """A search-space entry Optuna cannot use; names the parameter."""


@dataclass(frozen=True)
class ParamSpec:
    """One checked search-space entry, not yet an Optuna distribution (same attribute names)."""

    kind: str  # categorical | int | float
    low: Any = None
    high: Any = None
    step: Any = None
    log: bool = False
    choices: Tuple[Any, ...] = ()
    text: str = ""  # as written, for messages

    def __str__(self) -> str:
        return self.text

    def to_distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        cls = IntDistribution if self.kind == "int" else FloatDistribution
        return cls(self.low, self.high, log=self.log, **({} if self.step is None else {"step": self.step}))


def _range_values(name: str, sweep: RangeSweep) -> List[Any]:
    start, stop, step = sweep.start, sweep.stop, sweep.step if sweep.step is not None else 1
    if step == 0:
        raise SearchSpaceError(f"{name}: range step must be != 0, got 0")
    values = []
    i = 0
    while True:
        v = start + i * step
        if (step > 0 and v >= stop - (1e-12 * abs(step) if isinstance(v, float) else 0)) or (step < 0 and v <= stop):
            break
        values.append(round(v, 12) if isinstance(v, float) else v)
        i += 1
    if not values:
        raise SearchSpaceError(f"{name}: range({start}, {stop}, {step}) is empty")
    return values


def param_spec(override: Override) -> ParamSpec:
    """One sweep override (choice / range / interval, optionally tagged log), checked."""
    name = override.get_key_element()
    value = override.value()
    text = override.input_line.split("=", 1)[-1]
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        for c in choices:
            if not isinstance(c, (str, int, float, bool, type(None))):
                raise SearchSpaceError(f"{name}: choice values must be scalars, got {c!r}")
        return ParamSpec("categorical", choices=tuple(choices), text=text)
    if isinstance(value, RangeSweep):
        values = _range_values(name, value)
        step = value.step if value.step is not None else 1
        if value.shuffle or step < 0:
            return ParamSpec("categorical", choices=tuple(values), text=text)
        if all(isinstance(v, int) for v in (value.start, value.stop, step)):
            return ParamSpec("int", values[0], values[-1], step=step, text=text)
        return ParamSpec("float", values[0], values[-1], step=float(step), text=text)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        log = "log" in value.tags
        if not low < high:
            raise SearchSpaceError(f"{name}: interval needs low < high, got interval({low}, {high})")
        if log and low <= 0:
            raise SearchSpaceError(f"{name}: a log interval needs low > 0, got interval({low}, {high})")
        if isinstance(low, int) and isinstance(high, int):
            return ParamSpec("int", low, high, log=log, text=text)
        return ParamSpec("float", float(low), float(high), log=log, text=text)
    raise SearchSpaceError(f"{name}: {override.input_line!r} is not a search space (use choice, range or interval)")


def distribution_from_override(override: Override):
    """One sweep override -> its Optuna distribution."""
    return param_spec(override).to_distribution()


def grid_values(name: str, dist) -> List[Any]:
    """Points of a discrete distribution (or ParamSpec) for the grid sampler."""
    choices = getattr(dist, "choices", None)
    if choices:
        return list(choices)
    step = getattr(dist, "step", None)
    if step is not None and not dist.log:
        n = int(math.floor((dist.high - dist.low) / step + 1e-9)) + 1
        exact = isinstance(dist.low, int) and isinstance(step, int)
        return [dist.low + i * step if exact else round(dist.low + i * step, 12) for i in range(n)]
    raise SearchSpaceError(f"{name}: the grid sampler needs choice(...) or range(...), got {dist}")


def grid_size(search_space) -> int:
    n = 1
    for k, d in search_space.items():
        n *= len(grid_values(k, d))
    return n


def check_sampler_space(sampler: str, search_space, conditions=None) -> None:
    if not search_space:
        raise SearchSpaceError("hydra.sweeper.params is empty: give a search space, e.g. "
                               "model.learning_rate='tag(log, interval(1e-4, 1))' (or a sweep preset: sweep=tpe)")
    if sampler == "grid":
        if conditions:
            raise SearchSpaceError(f"hydra.sweeper.conditions ({', '.join(conditions)}) need a sampler that "
                                   "suggests each trial's params (tpe, random, ...), not the grid sampler")
        for k, d in search_space.items():
            grid_values(k, d)


@dataclass
class SweepPlan:
    """What a sweep runs: the search space, fixed overrides, and the outer-grid cells.

    search_space: {config key: distribution}; fixed: overrides applied to every trial;
    cells: list of override lists, one per study (a single empty cell without an outer grid).
    """

    search_space: Dict[str, Any]  # Optuna distributions (ParamSpecs with distributions=False)
    fixed: List[str]
    cells: List[List[str]]
    conditions: Dict[str, Condition] = field(default_factory=dict)  # param -> when it is searched

    def cell_label(self, cell: Sequence[str]) -> str:
        return ",".join(cell)


def plan_sweep(params: Dict[str, str], arguments: Sequence[str], distributions: bool = True,
               conditions: Optional[Dict[str, str]] = None) -> SweepPlan:
    """Split hydra.sweeper.params and the command-line overrides into a SweepPlan.

    Command-line sweeps written as functions (choice(...), interval(...)) join the search space
    (replacing a params entry of the same key); plain comma lists (loss=svm,softmax) whose key
    is not in the search space form the outer grid. ``distributions=False``: the checked
    ParamSpecs instead of Optuna distributions (Optuna is not imported). ``conditions``:
    hydra.sweeper.conditions (sweeps.conditions), checked against the search space.
    """
    parser = OverridesParser.create()
    space_overrides = {}
    for key, value in (params or {}).items():
        (ov,) = parser.parse_overrides([f"{key}={value}"])
        if not ov.is_sweep_override():
            raise SearchSpaceError(f"hydra.sweeper.params.{key}: {value!r} is not a search space "
                                   f"(use choice(...), range(...) or interval(...))")
        space_overrides[key] = ov
    fixed: List[str] = []
    grid: List[Tuple[str, List[str]]] = []
    for ov in parser.parse_overrides(list(arguments)):
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            fixed.append(ov.input_line)
        elif isinstance(ov.value(), ChoiceSweep) and ov.value().simple_form and key.lstrip("+~") not in space_overrides:
            grid.append((key, [f"{key}={v}" for v in ov.sweep_string_iterator()]))
        else:
            space_overrides[key.lstrip("+~")] = ov
    specs = {k: param_spec(ov) for k, ov in space_overrides.items()}
    search_space = {k: spec.to_distribution() for k, spec in specs.items()} if distributions else specs
    cells = [list(c) for c in itertools.product(*[vals for _, vals in grid])] if grid else [[]]
    try:
        parsed = parse_conditions(conditions, specs)
    except ConditionError as e:
        raise SearchSpaceError(str(e)) from None
    return SweepPlan(search_space=search_space, fixed=fixed, cells=cells, conditions=parsed)
