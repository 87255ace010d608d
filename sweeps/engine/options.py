"""The sweeper's options (``hydra.sweeper.*``), checked once, as a frozen dataclass."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..config import ConfigError, did_you_mean
from ..sampler_names import MODEL_BASED_SAMPLERS, PRUNERS, SAMPLERS

CPU_AUTO_BATCH, CUDA_AUTO_BATCH = 64, 256  # CUDA: without a memory reading (cuda_auto_batch)
CUDA_MAX_AUTO_BATCH = 1024  # wider stacks gain little: the step's GEMMs are already wide at K*C = 10k columns


def cuda_auto_batch(free_bytes: int, dim: int, classes: int, batch: int, optimizer: str, *, num_iters: int = 1500,
                    element_size: int = 4, score_rows: int = 8192, headroom: float = 0.5,
                    cap: int = CUDA_MAX_AUTO_BATCH) -> int:
    """How many stacked trials fit in ``headroom`` of ``free_bytes`` of GPU memory, in [1, cap].

    Per trial (elements of ``element_size`` bytes): W (D, C), its final copy, the check point's
    copy and the copy that drops finished trials; a velocity (momentum, nesterov) and its gradient
    buffer, or the averaged weights (asgd); the minibatch scores and their gradient (B, C) and
    temporaries (x2); the scores of a chunk of ``score_rows`` validation rows (and the train
    subset); the learning-rate, loss and averaging tables (num_iters each).
    """
    dc = dim * classes
    weights = 4 + {"momentum": 2, "nesterov": 2, "asgd": 1}.get(optimizer, 0)
    elements = weights * dc + 4 * batch * classes + 2 * score_rows * classes + 4 * num_iters
    return max(1, min(cap, int(headroom * free_bytes) // (elements * element_size)))


class SweepError(RuntimeError):
    """The sweep cannot go on (too many failures, stores out of sync, a study that differs)."""


def _rule(ok: bool, name: str, rule: str, value) -> None:
    if not ok:
        raise ConfigError(f"hydra.sweeper.{name} must be {rule}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class SweeperOptions:
    sampler: str = "tpe"
    seed: Optional[int] = None
    sampler_kwargs: Dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_kwargs: Dict[str, Any] = field(default_factory=dict)
    direction: str = "maximize"
    n_trials: int = 20
    storage: Optional[str] = "sqlite:///optuna.db"
    study_name: Optional[str] = None
    max_failure_rate: float = 0.5
    batch_size: Optional[int] = None
    max_retries: int = 1
    heartbeat_interval: int = 10
    grace_period: Optional[int] = None
    shutdown_timeout: float = 10.0
    progress_bar: Optional[bool] = None
    params: Dict[str, str] = field(default_factory=dict)
    conditions: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _rule(self.sampler in SAMPLERS, "sampler", f"one of {list(SAMPLERS)}", self.sampler)
        _rule(self.pruner in PRUNERS, "pruner", f"one of {list(PRUNERS)}", self.pruner)
        _rule(self.direction in ("maximize", "minimize"), "direction", "'maximize' or 'minimize'", self.direction)
        _rule(_is_int(self.n_trials) and self.n_trials >= 1, "n_trials", "an integer >= 1", self.n_trials)
        _rule(self.seed is None or _is_int(self.seed), "seed", "null or an integer", self.seed)
        _rule(isinstance(self.max_failure_rate, (int, float)) and 0.0 <= self.max_failure_rate <= 1.0,
              "max_failure_rate", "in [0, 1]", self.max_failure_rate)
        _rule(self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1), "batch_size",
              "null (auto) or an integer >= 1", self.batch_size)
        _rule(_is_int(self.max_retries) and self.max_retries >= 0, "max_retries", "an integer >= 0", self.max_retries)
        _rule(_is_int(self.heartbeat_interval) and self.heartbeat_interval >= 1, "heartbeat_interval",
              "an integer >= 1 (seconds)", self.heartbeat_interval)
        _rule(self.grace_period is None or (_is_int(self.grace_period) and self.grace_period > self.heartbeat_interval),
              "grace_period", f"null (3 x heartbeat_interval) or an integer > heartbeat_interval "
              f"({self.heartbeat_interval})", self.grace_period)
        _rule(isinstance(self.shutdown_timeout, (int, float)) and 0 < self.shutdown_timeout <= 3600,
              "shutdown_timeout", "in (0, 3600] seconds", self.shutdown_timeout)
        _rule(self.study_name is None or (isinstance(self.study_name, str) and self.study_name.strip() != ""
                                          and "'" not in self.study_name),
              "study_name", "null or a non-empty name without quotes", self.study_name)

    @classmethod
    def from_hydra(cls, options: Dict[str, Any]) -> "SweeperOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            name = f"hydra.sweeper.{unknown[0]}"
            raise ConfigError(f"{name} is not an option"
                              + (did_you_mean(name, known) or f"; known: {', '.join(sorted(known))}"))
        plain = {k: (dict(v) if hasattr(v, "items") else v) for k, v in options.items()}
        return cls(**plain)

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval

    @property
    def model_based(self) -> bool:
        return self.sampler in MODEL_BASED_SAMPLERS

    def batch_size_for(self, device_type: str, n_trials: int, cuda_fit: Optional[int] = None) -> int:
        """Trials asked per round: ``batch_size``, or auto: one stack for samplers that learn
        nothing between trials (on CUDA, ``cuda_fit``: what :func:`cuda_auto_batch` says fits),
        about four rounds per study for model-based ones on every device (TPE and CMA-ES learn
        from the trials told between rounds; a GPU's wider stacks would leave them fewer rounds)."""
        if self.batch_size is not None:
            return self.batch_size
        if not self.model_based:
            cuda = cuda_fit if cuda_fit is not None else CUDA_AUTO_BATCH
            return min(cuda if device_type == "cuda" else CPU_AUTO_BATCH, n_trials)
        return max(1, min(CPU_AUTO_BATCH, math.ceil(n_trials / 4)))

    def better(self, value: float, than: float) -> bool:
        return value > than if self.direction == "maximize" else value < than
