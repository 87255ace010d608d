"""Reseeding: the best config of each family, S new seeds, as MLflow runs nested under the comparison."""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import pandas as pd

from ..tracking import TAG_FAILURE, TAG_PARENT, TAG_RESEED_OF, TAG_RESEED_SEED, TAG_ROLE
from .errors import CompareError
from .fmt import finite
from .runs import RunLoader, RunUnavailable
from .summary import FamilySummary

log = logging.getLogger(__name__)


def reseed_config(summary: FamilySummary, loader: RunLoader, device: Optional[str] = None):
    """The best run's config.yaml, checked to train here (device, dataset), with test_eval=all.

    Raises CompareError before any run is created when it cannot.
    """
    from omegaconf import open_dict

    from ..config import ConfigError, validate_config
    from ..data import load_data, resolve_device

    try:
        base = loader.config(summary.best["run_id"])
    except RunUnavailable as e:
        raise CompareError(f"--reseed: family {summary.family}: {e}") from None
    with open_dict(base):
        if device is not None:
            base.device.type = device
        base.tracking.test_eval = "all"  # every reseeded run gets its test accuracy
    try:
        validate_config(base)
    except ConfigError as e:
        hint = " (pass --device cpu)" if "device" in str(e) else (" (pass --data-root PATH)" if "root" in str(e) else "")
        raise CompareError(f"--reseed: the best {summary.family} run's config cannot train here: {e}{hint}") from None
    try:
        load_data(base.dataset, base.model.dtype, resolve_device(base.device.type))
    except Exception as e:
        raise CompareError(f"--reseed: the dataset of the best {summary.family} run (dataset.root="
                           f"{base.dataset.get('root')!r}) could not be loaded: {type(e).__name__}: {e}; "
                           "pass --data-root PATH") from None
    return base


def reseed_family(summary: FamilySummary, base, seeds: Sequence[int], tracker=None,
                  parent_id: Optional[str] = None) -> pd.DataFrame:
    """Retrain ``base`` (from :func:`reseed_config`) once per seed with sweeps.runner.run_trials.

    Each seed is a run nested under ``parent_id`` (when ``tracker`` is given); one row per seed.
    """
    from ..data import resolve_device
    from ..runner import COMPLETED, TrialSpec, run_trials, trial_params

    best = summary.best
    dev = resolve_device(base.device.type)
    specs = []
    for i, seed in enumerate(seeds):
        cfg = base.copy()
        cfg.seed = int(seed)
        run_id = None
        if tracker is not None:
            run_id = tracker.create_run(
                f"reseed {summary.family} seed={seed}",
                tags={TAG_ROLE: "reseed", TAG_RESEED_OF: best["run_id"], TAG_RESEED_SEED: seed,
                      TAG_PARENT: parent_id, "compare.family": summary.family},
                params=trial_params(cfg, dev))
        specs.append(TrialSpec(cfg=cfg, number=i, run_id=run_id))
    log.info("reseeding %s: %d seeds of run %s on %s", summary.family, len(specs), best["run_id"], dev)
    try:
        outcomes = run_trials(specs, tracker, device=dev)  # one device for all seeds; leaves the runs RUNNING
    except BaseException:
        if tracker is not None:
            for spec in specs:
                tracker.end_run(spec.run_id, "KILLED")
        raise
    rows = []
    for spec, out in zip(specs, outcomes):
        if tracker is not None:
            if out.status != COMPLETED and out.message:
                tracker.set_tags(spec.run_id, {TAG_FAILURE: out.message})
            tracker.end_run(spec.run_id, "FINISHED" if out.status == COMPLETED else "FAILED")
        ok = out.status == COMPLETED
        rows.append({"family": summary.family, "seed": int(spec.cfg.seed), "run_id": spec.run_id,
                     "of_run": best["run_id"], "status": out.status, "message": out.message,
                     "val_acc": out.val_acc if ok else math.nan,
                     "test_acc": out.test_acc if ok and out.test_acc is not None else math.nan,
                     "seconds": out.seconds})
    return pd.DataFrame(rows)


def reseed_families(summaries: Sequence[FamilySummary], bases: dict, n_seeds: int, tracker=None,
                    parent_id: Optional[str] = None) -> Optional[pd.DataFrame]:
    """:func:`reseed_family` for each family in ``bases`` ({family: config}), seeds seed0+1..seed0+S.

    Sets each summary's ``reseed``; returns all their rows in one frame (None when ``bases`` is empty).
    """
    frames = []
    for s in summaries:
        if s.family not in bases:
            continue
        seed0 = int(s.best["seed"]) if finite(s.best.get("seed")) else 0
        seeds = [seed0 + i for i in range(1, n_seeds + 1)]
        s.reseed = reseed_family(s, bases[s.family], seeds, tracker, parent_id)
        frames.append(s.reseed)
    return pd.concat(frames, ignore_index=True) if frames else None
