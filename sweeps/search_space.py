"""Hydra override grammar -> Optuna distributions, grid values and the outer grid.

Bound convention (one for every sampler):
  interval(a, b)     a <= x <= b, a float (both ends included)
  int(interval(a, b)) the same for integers
  range(a, b, s)     a, a+s, ... < b (stop excluded, as in Python and Hydra's basic sweeper)
  choice(x, y, ...)  one of the listed values
  tag(log, ...)      sample on a log scale (interval only)
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

__all__ = ["SearchSpaceError", "SweepPlan", "distribution_from_override", "grid_values", "plan_sweep"]


class SearchSpaceError(ValueError):
    """A search-space entry Optuna cannot use; names the parameter."""


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


def distribution_from_override(override: Override) -> BaseDistribution:
    """One sweep override (choice / range / interval, optionally tagged log) -> distribution."""
    name = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        for c in choices:
            if not isinstance(c, (str, int, float, bool, type(None))):
                raise SearchSpaceError(f"{name}: choice values must be scalars, got {c!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = _range_values(name, value)
        if value.shuffle:
            return CategoricalDistribution(values)
        step = value.step if value.step is not None else 1
        if all(isinstance(v, int) for v in (value.start, value.stop, step)):
            return IntDistribution(values[0], values[-1], step=abs(step)) if step > 0 else CategoricalDistribution(values)
        return FloatDistribution(values[0], values[-1], step=float(step)) if step > 0 else CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        log = "log" in value.tags
        if not low < high:
            raise SearchSpaceError(f"{name}: interval needs low < high, got interval({low}, {high})")
        if log and low <= 0:
            raise SearchSpaceError(f"{name}: a log interval needs low > 0, got interval({low}, {high})")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{name}: {override.input_line!r} is not a search space (use choice, range or interval)")


def grid_values(name: str, dist: BaseDistribution) -> List[Any]:
    """Points of a discrete distribution for the grid sampler."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    step = getattr(dist, "step", None)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and step is not None and not dist.log:
        n = int(math.floor((dist.high - dist.low) / step + 1e-9)) + 1
        return [dist.low + i * step if isinstance(dist, IntDistribution) else round(dist.low + i * step, 12) for i in range(n)]
    raise SearchSpaceError(f"{name}: the grid sampler needs choice(...) or range(...), got {dist}")


@dataclass
class SweepPlan:
    """What a sweep runs: the search space, fixed overrides, and the outer-grid cells.

    search_space: {config key: distribution}; fixed: overrides applied to every trial;
    cells: list of override lists, one per study (a single empty cell without an outer grid).
    """

    search_space: Dict[str, BaseDistribution]
    fixed: List[str]
    cells: List[List[str]]

    def cell_label(self, cell: Sequence[str]) -> str:
        return ",".join(cell)


def plan_sweep(params: Dict[str, str], arguments: Sequence[str]) -> SweepPlan:
    """Split hydra.sweeper.params and the command-line overrides into a SweepPlan.

    Command-line sweeps written as functions (choice(...), interval(...)) join the search space
    (replacing a params entry of the same key); plain comma lists (loss=svm,softmax) whose key
    is not in the search space form the outer grid.
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
    search_space = {k: distribution_from_override(ov) for k, ov in space_overrides.items()}
    cells = [list(c) for c in itertools.product(*[vals for _, vals in grid])] if grid else [[]]
    return SweepPlan(search_space=search_space, fixed=fixed, cells=cells)
