"""Which study a cell belongs to: a study is identified by what changes the objective.

The objective of a cell is its composed config without the keys that only say where things
run or are recorded (``tracking``, ``device``, the data cache), without the searched keys (each
trial sets those), plus the search space (and its conditions), the sampler and the direction.
It is stored on the study (user attribute ``linear_sweeps.objective``) when the study is created.
Options added in later versions (the optimizer, preprocess and augment groups) enter it only
where they differ from their defaults, the behaviour before them, so existing studies resume.

Study names: an explicit ``hydra.sweeper.study_name`` is joined on purpose; a launch whose
objective differs from that study's is refused, naming the keys that differ. The default name
(``<experiment>[<cell>]``) goes to the first objective that uses it; a launch with another
objective gets its own study, ``<default name>~<8 hex digits of its objective>``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

ATTR_OBJECTIVE = "linear_sweeps.objective"
NOT_OBJECTIVE = ("tracking", "device", "dataset.cache_dir", "dataset.download", "dataset.url", "metric")
# Sections added after studies were first stamped: at their defaults they are not part of it.
ADDED_SECTIONS = ("optimizer", "preprocess", "augment")
# What a study made by an older version recorded on its parent run (param name -> config key).
LEGACY_PARAMS = {"loss": "loss.name", "dataset": "dataset.name", "num_iters": "model.num_iters",
                 "batch_size": "model.batch_size"}


def _flatten(node: Any, prefix: str = "") -> Dict[str, str]:
    if isinstance(node, dict):
        flat: Dict[str, str] = {}
        for k, v in node.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}


@dataclass(frozen=True)
class Objective:
    """A cell's objective as flat ``{key: JSON value}``; ``digest``: 8 hex digits of it."""

    values: Dict[str, str]

    @classmethod
    def of(cls, base: DictConfig, search_space: Dict[str, Any], sampler: str, direction: str,
           conditions: Optional[Dict[str, Any]] = None) -> "Objective":
        plain = OmegaConf.to_container(base, resolve=True)
        defaults = _added_defaults()
        flat = {k: v for k, v in _flatten(plain).items()
                if not any(k == n or k.startswith(n + ".") for n in NOT_OBJECTIVE) and k not in search_space
                and defaults.get(k) != v}
        flat["search_space"] = json.dumps({k: str(d) for k, d in sorted(search_space.items())})
        if conditions:
            flat["conditions"] = json.dumps({k: str(c) for k, c in sorted(conditions.items())})
        flat["sampler"] = json.dumps(sampler)
        flat["direction"] = json.dumps(direction)
        return cls(flat)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()[:8]

    def differences(self, other: Dict[str, str]) -> List[str]:
        """Keys whose values differ, as ``key: theirs -> ours`` (ours: this launch)."""
        keys = sorted(set(self.values) | set(other))
        return [f"{k}: {other.get(k, '(unset)')} -> {self.values.get(k, '(unset)')}"
                for k in keys if other.get(k) != self.values.get(k)]

    def matches_legacy(self, params: Dict[str, str]) -> List[str]:
        """Differences against the params an older version logged on a study's parent run."""
        diffs = []
        for param, key in LEGACY_PARAMS.items():
            if param in params and key in self.values:
                ours = str(json.loads(self.values[key]))
                if params[param] != ours:
                    diffs.append(f"{key}: {params[param]} -> {ours}")
        return diffs


def _added_defaults() -> Dict[str, str]:
    """{key: JSON default} of the ADDED_SECTIONS, from the schema."""
    from ..config import Config

    schema = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    return {k: v for k, v in _flatten({s: schema[s] for s in ADDED_SECTIONS}).items()}


def default_study_name(experiment: str, explicit: Optional[str], cell: Sequence[str]) -> str:
    name = explicit or experiment
    return f"{name}[{','.join(cell)}]" if cell else name


def alternative_name(name: str, objective: Objective) -> str:
    return f"{name}~{objective.digest}"
