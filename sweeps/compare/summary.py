"""Per-family summary: counts by state, the best run, the top-k, the best run's test accuracy."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd

from .fmt import finite
from .runs import RunLoader, RunUnavailable
from .selection import family_labels

log = logging.getLogger(__name__)


@dataclass
class FamilySummary:
    """One family (a value of --group-by): counts, the best run and its top-k.

    ``top`` and ``best`` are rows of the trials frame (`selection.runs_frame` columns:
    run_id, study, trial, state, val_acc, test_acc, learning_rate, reg, ...); ``reseed`` is the
    frame of `reseed.reseed_family` (family, seed, run_id, status, val_acc, test_acc, ...).
    """

    family: str
    trials: int
    completed: int
    pruned: int
    failed: int
    running: int
    retried: int  # failed runs re-queued by the sweep (their retry is another run)
    studies: List[str]
    experiments: List[str]
    median_seconds: float
    top: pd.DataFrame  # the top-k completed runs, best first
    best: Optional[pd.Series] = None  # the best completed run (row of the trials frame)
    test_acc: Optional[float] = None  # of the best run
    test_acc_source: str = ""
    reseed: Optional[pd.DataFrame] = None
    edges: Optional[Any] = None  # edges.EdgeCheck: is the best lr / reg at a bound of the search?

    @property
    def best_val_acc(self) -> float:
        return float(self.best["val_acc"]) if self.best is not None else float("nan")


def ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with a finite val_acc, best first (ties: a run with test_acc, then the earliest)."""
    if "val_acc" not in df.columns:
        return df.iloc[0:0]
    done = df[(df["state"] == "COMPLETE") & np.isfinite(pd.to_numeric(df["val_acc"], errors="coerce").astype(float))]
    has_test = done["test_acc"].notna() if "test_acc" in done.columns else pd.Series(False, index=done.index)
    return (done.assign(_has_test=has_test)
            .sort_values(["val_acc", "_has_test", "start_time"], ascending=[False, False, True], kind="mergesort")
            .drop(columns="_has_test"))


def summarize(df: pd.DataFrame, group_by: Sequence[str] = ("loss",), top_k: int = 5) -> List[FamilySummary]:
    """One FamilySummary per group-by value, sorted by label."""
    labels = family_labels(df, group_by)
    retried_keys = {(s, str(n)) for s, n in zip(df["study"], df.get("retry_of", pd.Series(dtype=object)))
                    if n is not None and not pd.isna(n)}
    out = []
    for fam in sorted(labels.unique()):
        sub = df[labels == fam]
        is_retried = pd.Series([(s, str(t)) in retried_keys for s, t in zip(sub["study"], sub["trial"])],
                               index=sub.index) & (sub["state"] == "FAIL")
        secs = sub["trial_seconds"] if "trial_seconds" in sub.columns else sub["duration_s"]
        secs = pd.to_numeric(secs, errors="coerce").astype(float)
        if secs.isna().all():
            secs = pd.to_numeric(sub["duration_s"], errors="coerce").astype(float)
        rank = ranked(sub)
        out.append(FamilySummary(
            family=fam, trials=len(sub), completed=int((sub["state"] == "COMPLETE").sum()),
            pruned=int((sub["state"] == "PRUNED").sum()), failed=int(((sub["state"] == "FAIL") & ~is_retried).sum()),
            running=int((sub["state"] == "RUNNING").sum()), retried=int(is_retried.sum()),
            studies=sorted(sub["study"].dropna().unique().tolist()),
            experiments=sorted(sub["experiment"].dropna().unique().tolist()),
            median_seconds=float(secs.median()) if secs.notna().any() else float("nan"),
            top=rank.head(top_k), best=rank.iloc[0] if len(rank) else None))
    return out


def fill_test_accuracy(summaries: List[FamilySummary], loader: RunLoader, tracker=None) -> None:
    """The best run's test_acc metric; when missing, computed from weights.pt (and logged back)."""
    for s in summaries:
        if s.best is None:
            s.test_acc_source = "no completed trial"
            continue
        value = s.best.get("test_acc")
        if value is not None and not pd.isna(value):
            s.test_acc, s.test_acc_source = float(value), "the run's test_acc metric"
            continue
        try:
            ev = loader.evaluate(s.best["run_id"])
        except RunUnavailable as e:
            s.test_acc_source = f"unavailable: {e}"
            log.warning("%s: test accuracy of the best run unavailable: %s", s.family, e)
            continue
        s.test_acc, s.test_acc_source = ev.test_acc, "computed from the run's weights.pt"
        if tracker is not None:
            step = int(s.best["iterations"]) if finite(s.best.get("iterations")) else 0
            tracker.log_metrics(s.best["run_id"], {"test_acc": ev.test_acc}, step=step)
            tracker.set_tags(s.best["run_id"], {"test_acc_of": "best of its family (selected by val_acc), "
                                                               "computed by linear-compare"})
