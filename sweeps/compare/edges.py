"""Is a family's best configuration at the edge of its search space? Then the optimum may lie beyond it.

The bounds come from the parent study run's ``search_space`` tag, a YAML dict of config key ->
distribution, written either as Optuna's repr (``FloatDistribution(high=1.0, log=True,
low=0.001, step=None)``, what linear-sweep logs) or in Hydra's override grammar
(``tag(log, interval(1e-3, 1.0))``, ``choice(1e-3, 1e-2)``). Without that tag, the bounds are
the smallest and largest values tried in the family.
"""
from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from .fmt import finite, sci
from .summary import FamilySummary

log = logging.getLogger(__name__)

EDGE_PARAMS = ("learning_rate", "reg")  # trial-run param names (config keys model.learning_rate, model.reg)
REL_TOL = 0.01  # a best value within 1% of a bound is at it
TAG_SEARCH_SPACE = "search_space"  # on the study (parent) run, written by sweeps/sweeper.py
_REPR_NUM = r"([-+0-9.eE]+|inf)"


@dataclass
class Edge:
    param: str  # trial-run param name, e.g. "learning_rate"
    value: float  # the best run's value
    side: str  # "lower" or "upper"
    bound: float
    source: str  # "search space" or "values tried"

    def describe(self) -> str:
        return f"{self.param} = {sci(self.value)} is at the {self.side} bound {sci(self.bound)} of the {self.source}"


@dataclass
class EdgeCheck:
    """What :func:`find_edges` compared (``checked`` params, against ``source``) and found."""

    source: str  # "search space" or "values tried"
    checked: List[str] = field(default_factory=list)
    edges: List[Edge] = field(default_factory=list)

    def line(self, family: str) -> str:
        """One line of the report: where the family's best configuration lies."""
        if self.edges:
            return (f"{family}: **best " + "; ".join(e.describe() for e in self.edges)
                    + "**: the optimum may lie beyond it, widen that range")
        if not self.checked:
            return (f"{family}: no range known for {' or '.join(EDGE_PARAMS)} (no search_space tag on the study "
                    "run, fewer than 3 values tried)")
        return f"{family}: best {' and '.join(self.checked)} inside the {self.source} (none within 1% of a bound)"


def parse_search_space(text: Optional[str]) -> Dict[str, Tuple[float, float]]:
    """{param name: (low, high)} of the numeric entries of a ``search_space`` tag.

    Keys lose their config group (``model.learning_rate`` -> ``learning_rate``); categorical
    entries count when every choice is a number (their min and max); others are left out.
    Unreadable text gives {}.
    """
    import yaml

    try:
        space = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    out = {}
    for key, spec in (space or {}).items() if isinstance(space, dict) else ():
        bounds = _bounds(str(key), str(spec))
        if bounds is not None:
            out[str(key).rsplit(".", 1)[-1]] = bounds
    return out


def _bounds(key: str, spec: str) -> Optional[Tuple[float, float]]:
    """(low, high) of one entry, Optuna repr or override grammar; None when not numeric."""
    if spec.startswith(("FloatDistribution(", "IntDistribution(")):
        low, high = (re.search(rf"\b{k}={_REPR_NUM}", spec) for k in ("low", "high"))
        return (float(low.group(1)), float(high.group(1))) if low and high else None
    if spec.startswith("CategoricalDistribution("):
        try:
            choices = ast.literal_eval(spec[spec.index("choices=") + len("choices="):-1])
        except (ValueError, SyntaxError):
            return None
        return _numeric_range(choices)
    return _override_bounds(key, spec)


def _override_bounds(key: str, spec: str) -> Optional[Tuple[float, float]]:
    """(low, high) of a Hydra sweep override (``interval``, ``range``, ``choice``), via sweeps.search_space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution

    from ..search_space import distribution_from_override

    try:
        (override,) = OverridesParser.create().parse_overrides([f"{key}={spec}"])
        dist = distribution_from_override(override)
    except Exception:  # not a sweep (a plain value) or malformed: no bounds to check against
        return None
    if isinstance(dist, CategoricalDistribution):
        return _numeric_range(dist.choices)
    return float(dist.low), float(dist.high)


def _numeric_range(values: Sequence) -> Optional[Tuple[float, float]]:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (min(nums), max(nums)) if nums and len(nums) == len(values) else None


def _at(value: float, bound: float) -> bool:
    return abs(value - bound) <= REL_TOL * abs(bound) if bound != 0 else value == 0


def find_edges(best: pd.Series, family: pd.DataFrame,
               space: Optional[Dict[str, Tuple[float, float]]]) -> EdgeCheck:
    """The EDGE_PARAMS whose best value lies within 1% of a bound.

    best: the family's best run (row of the trials frame); family: all its trial runs; space:
    :func:`parse_search_space` of its study run, or None (then: the values tried in ``family``,
    when it tried at least 3 distinct ones). A param outside a known space was not searched.
    """
    check = EdgeCheck("search space" if space else "values tried")
    for param in EDGE_PARAMS:
        value = best.get(param)
        if not finite(value):
            continue
        if space:
            if param not in space:
                continue
            low, high = space[param]
        else:
            tried = pd.to_numeric(family[param], errors="coerce") if param in family.columns else pd.Series([])
            tried = tried[tried.map(finite)]
            if tried.nunique() < 3:
                continue
            low, high = float(tried.min()), float(tried.max())
        if low == high:
            continue
        check.checked.append(param)
        value = float(value)
        if _at(value, low) or _at(value, high):
            side, bound = ("lower", low) if _at(value, low) else ("upper", high)
            check.edges.append(Edge(param, value, side, bound, check.source))
    return check


def fill_edges(summaries: List[FamilySummary], df: pd.DataFrame, labels: pd.Series, client=None) -> None:
    """Set each summary's ``edges`` (an EdgeCheck); the search space is read from the best run's
    study run (with ``client``), else the values tried in the family are the bounds."""
    for s in summaries:
        if s.best is None:
            continue
        space = _study_space(client, s.best.get("parent_run_id")) if client is not None else None
        s.edges = find_edges(s.best, df[labels == s.family], space)
        for e in s.edges.edges:
            log.warning("%s: best %s: the optimum may lie beyond it", s.family, e.describe())


def _study_space(client, parent_id) -> Optional[Dict[str, Tuple[float, float]]]:
    if not isinstance(parent_id, str) or not parent_id:
        return None
    try:
        tags = client.get_run(parent_id).data.tags
    except Exception:  # a deleted study run: fall back to the values tried
        return None
    return parse_search_space(tags.get(TAG_SEARCH_SPACE)) or None
