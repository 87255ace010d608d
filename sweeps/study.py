"""Optuna side of a sweep: samplers, pruners, the trial budget, re-queues and batched asks.

The budget rule (one for every worker, launch and version): a study is done when ``n_trials``
trials *count*. COMPLETE, PRUNED, RUNNING and WAITING trials count, and so does a FAIL caused by
its params (its reason starts with ``diverged`` or ``error``). A FAIL caused by the run around it
(an interrupt, a dead worker, a tracking error, or an unknown reason left by an older version)
does not: a relaunch asks a replacement, so the study still ends with ``n_trials``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .adapter import BatchTPESampler
from .sampler_names import (BATCH_SEEDED_SAMPLERS, MODEL_BASED_SAMPLERS, PRUNERS, RESEEDED_SAMPLERS,  # noqa: F401
                            SAMPLERS)
from .search_space import check_sampler_space, grid_size, grid_values  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Trial user attributes written by the sweep (Optuna -> MLflow link and failure reasons).
ATTR_RUN_ID = "mlflow_run_id"
ATTR_FAIL_REASON = "fail_reason"
FAIL_INTERRUPTED = "interrupted"
PARAM_FAILURES = ("diverged", "error")  # reasons that are the params' fault


def sampler_options(name: str, kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Options for sampler ``name``: flat keys, plus those nested under its name.

    Presets nest their options (``sampler_kwargs: {tpe: {multivariate: true}}``) so that
    switching the sampler on the command line doesn't hand TPE's options to another sampler.
    """
    kwargs = dict(kwargs or {})
    nested = kwargs.pop(name, None) or {}
    for other in SAMPLERS:
        kwargs.pop(other, None)
    return {**kwargs, **dict(nested)}


class BudgetedGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its end-of-grid check after each tell. That check reads
    every trial (a 1,000-trial grid spent 130 ms a tell in it) to stop ``study.optimize``; the
    engine runs no optimize loop and caps n_trials at the grid's size itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class FirstSpaceQMCSampler(optuna.samplers.QMCSampler):
    """Optuna's QMC sampler, its search space kept once it can no longer change. Optuna's takes
    the distributions of the study's first finished trial, found by a scan of every trial on
    every ask (3 ms an ask at 5,000 trials). Once no earlier trial can still finish, that first
    trial is final: its space is kept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kept_space: Optional[Dict[str, Any]] = None

    def infer_relative_search_space(self, study, trial):
        if self._kept_space is not None:
            return dict(self._kept_space)
        space = super().infer_relative_search_space(study, trial)
        trials = study.get_trials(deepcopy=False)
        finished = [t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if finished and all(t.state.is_finished() for t in trials if t.number < min(finished)):
            self._kept_space = dict(space)
        return space


def make_sampler(name: str, seed: Optional[int], search_space, kwargs: Dict[str, Any]) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name; grid enumerates the search space (choice/range only)."""
    kwargs = sampler_options(name, kwargs)
    if name == "tpe":
        kwargs.setdefault("constant_liar", True)  # batched and parallel asks see running trials
        return BatchTPESampler(seed=seed, **kwargs)  # TPESampler's draws, its per-batch work once
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **kwargs)
    if name == "grid":
        grid = {k: grid_values(k, d) for k, d in search_space.items()}
        return BudgetedGridSampler(grid, seed=seed, **kwargs)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **kwargs)
    if name == "qmc":
        kwargs.setdefault("warn_asynchronous_seeding", False)
        return FirstSpaceQMCSampler(seed=seed, **kwargs)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kwargs)
    raise ValueError(f"hydra.sweeper.sampler must be one of {list(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, kwargs: Dict[str, Any]) -> optuna.pruners.BasePruner:
    kwargs = dict(kwargs or {})
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        kwargs.setdefault("n_startup_trials", 5)
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**kwargs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    raise ValueError(f"hydra.sweeper.pruner must be one of {list(PRUNERS)}, got {name!r}")


def is_param_failure(reason: Optional[str]) -> bool:
    """A FAIL whose reason is its params' fault (it counts, and its MLflow run is FAILED)."""
    return bool(reason) and reason.startswith(PARAM_FAILURES)


def counts_toward_budget(trial: FrozenTrial) -> bool:
    if trial.state != TrialState.FAIL:
        return True
    return is_param_failure(trial.user_attrs.get(ATTR_FAIL_REASON))


def counted_trials(trials: List[FrozenTrial]) -> List[FrozenTrial]:
    """Trials that use up the budget (see the module docstring)."""
    return [t for t in trials if counts_toward_budget(t)]


def remaining_budget(study: optuna.Study, n_trials: int) -> int:
    return max(0, n_trials - len(counted_trials(study.get_trials(deepcopy=False))))


def askable(trials: List[FrozenTrial], n_trials: int) -> int:
    """How many trials a worker may ask now: the budget left plus the re-queued (WAITING)
    trials, which the budget counts already but someone still has to run (ask pops them first)."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(0, n_trials - len(counted_trials(trials))) + waiting


def requeue(study: optuna.Study, trial: FrozenTrial, max_retries: Optional[int]) -> bool:
    """Add a WAITING copy of a failed trial (same params) unless it was retried ``max_retries``
    times already (None: no limit). Unlike Optuna's retry callback, the copy does not inherit the
    user attributes: its MLflow run and failure reason are its own."""
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    if max_retries is not None and len(history) > max_retries:
        log.warning("trial %d of %s was retried %d times: not re-queued again (a new trial replaces it)",
                    trial.number, study.study_name, len(history) - 1)
        return False
    system_attrs = {**trial.system_attrs, "failed_trial": trial.number, "retry_history": history}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, system_attrs=system_attrs))
    return True


def best_value(study: optuna.Study) -> Optional[float]:
    try:
        return study.best_value
    except ValueError:
        return None


def trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**32)
