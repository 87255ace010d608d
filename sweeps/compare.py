"""`linear-compare` (also `python -m sweeps.compare`): which classifier is better, by how much, and why.

    linear-compare                                    # every sweep in ./mlflow.db
    linear-compare --experiment linear-sweeps-cifar10 --reseed 5 --out report/
    linear-compare --study my-sweep --tag sampler=tpe --group-by loss --csv trials.csv

Reads the trial runs of one or more sweeps from any MLflow tracking URI into a pandas DataFrame
(one row per trial run: params, latest metrics, Optuna state), and writes a report per family
(the values of ``--group-by``, by default the loss): trials run / completed / pruned / failed,
the best validation accuracy with its learning rate and regularization, the test accuracy of
that configuration, median seconds per trial and the top-k configurations. ``--reseed S``
retrains each family's best configuration with S new seeds, so the report can say whether the
gap between families is larger than the seed noise (one best run per family cannot).

Output, in ``--out``: report.md, a self-contained report.html (figures embedded, sortable trial
table), the figures as PNG, trials.csv (and reseeds.csv); all logged as artifacts of a run
tagged ``linear_sweeps.role=comparison`` in the sweeps' MLflow experiment (unless --no-log).

Exit codes: 0 done, 2 bad arguments / unknown experiment / empty selection / data unusable.
"""
from __future__ import annotations

import argparse
import base64
import html
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

# Tag names: one source, sweeps/tracking.py.
from .tracking import (
    TAG_FAILURE,
    TAG_PARENT,
    TAG_RESEED_OF,
    TAG_RESEED_SEED,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
EXIT_ERROR = 2
# MLflow run status -> Optuna-like state, for runs without the optuna.trial_state tag.
_STATE_FROM_STATUS = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING",
                      "SCHEDULED": "RUNNING"}
_BASE_COLUMNS = ["run_id", "run_name", "experiment", "study", "trial", "state", "status", "failure_reason",
                 "parent_run_id", "start_time", "end_time", "duration_s"]


class CompareError(Exception):
    """A problem the user can fix (selection, arguments, data); printed without a traceback, exit 2."""


# ---------------------------------------------------------------------------------------------
# Selection: tracking URI, experiments, studies, tags -> one DataFrame of trial runs
# ---------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """What to compare. Empty lists select everything; all given criteria must hold."""

    experiments: List[str] = field(default_factory=list)
    studies: List[str] = field(default_factory=list)  # exact name, or a sweep's name (its [cell] studies)
    tags: Dict[str, str] = field(default_factory=dict)  # on the trial run or its parent study run

    def describe(self) -> str:
        parts = [f"experiments={self.experiments or 'all'}"]
        if self.studies:
            parts.append(f"studies={self.studies}")
        if self.tags:
            parts.append("tags={" + ", ".join(f"{k}={v}" for k, v in self.tags.items()) + "}")
        return ", ".join(parts)


def resolve_tracking_uri(uri: Optional[str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd (made absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    elif "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    return uri


def redact(uri: str) -> str:
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def open_client(uri: str):
    """An MlflowClient for ``uri``; a SQLite file that does not exist is an error, not a new store."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") - 1:] if uri.startswith("sqlite:////") else uri[len("sqlite:///"):])
        if not path.is_file():
            raise CompareError(f"no MLflow store at {uri} (file {path} does not exist): pass --tracking-uri URI "
                               "or set MLFLOW_TRACKING_URI, e.g. sqlite:///path/to/mlflow.db or http://host:5000")
    return MlflowClient(tracking_uri=uri)


def resolve_experiments(client, names: Sequence[str]) -> list:
    """The experiments named (all active ones when none); an unknown name lists the known ones."""
    known = client.search_experiments()
    if not names:
        return list(known)
    by_name = {e.name: e for e in known}
    missing = [n for n in names if n not in by_name]
    if missing:
        listing = ", ".join(sorted(by_name)) or "(none)"
        raise CompareError(f"unknown experiment{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                           f"experiments in this store: {listing}")
    return [by_name[n] for n in dict.fromkeys(names)]


def search_all(client, experiment_ids: Sequence[str], filter_string: str, page_size: int = 1000) -> list:
    """Every run matching ``filter_string`` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string, max_results=page_size, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _num(series: pd.Series) -> pd.Series:
    """Param strings -> numbers when every non-missing value is one ("None" counts as missing)."""
    s = series.where(~series.isin(["None", "null", ""]), None)
    converted = pd.to_numeric(s, errors="coerce")
    if converted.notna().sum() == s.notna().sum() and s.notna().any():
        return converted
    return series.astype("object").where(series.notna(), None).astype("string")


def runs_frame(runs: list, experiment_names: Dict[str, str]) -> pd.DataFrame:
    """One row per run: identity and Optuna state, then every param, then every latest metric.

    A metric whose name is also a param's is stored as ``metric.<name>``.
    """
    rows = []
    for r in runs:
        tags, info = r.data.tags, r.info
        state = tags.get(TAG_TRIAL_STATE) or _STATE_FROM_STATUS.get(info.status, info.status)
        end = info.end_time
        number = tags.get(TAG_TRIAL_NUMBER)
        row = {
            "run_id": info.run_id, "run_name": info.run_name, "experiment": experiment_names.get(info.experiment_id,
                                                                                              info.experiment_id),
            "study": tags.get(TAG_STUDY), "trial": int(number) if number not in (None, "") else None,
            "state": state, "status": info.status, "failure_reason": tags.get(TAG_FAILURE),
            "parent_run_id": tags.get(TAG_PARENT), "start_time": info.start_time, "end_time": end,
            "duration_s": (end - info.start_time) / 1000 if end and info.start_time else None,
            "retry_of": tags.get(TAG_RETRY_OF),
        }
        for k, v in r.data.params.items():
            row[f"param:{k}"] = v
        for k, v in r.data.metrics.items():
            row[f"metric:{k}"] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=_BASE_COLUMNS)
    df["trial"] = df["trial"].astype("Int64")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    params = sorted(c for c in df.columns if c.startswith("param:"))
    metrics = sorted(c for c in df.columns if c.startswith("metric:"))
    param_names = {c[6:] for c in params}
    renames = {c: c[6:] for c in params}
    renames.update({c: (f"metric.{c[7:]}" if c[7:] in param_names or c[7:] in _BASE_COLUMNS else c[7:]) for c in metrics})
    for c in params:
        df[c] = _num(df[c])
    base = [c for c in _BASE_COLUMNS + ["retry_of"] if c in df.columns]
    return df[base + params + metrics].rename(columns=renames)


def load_trials(client, selection: Selection) -> Tuple[pd.DataFrame, list]:
    """The selected trial runs as a DataFrame, and the experiments searched.

    Raises CompareError for an unknown experiment or when nothing matches (saying what was
    selected and which studies exist there).
    """
    experiments = resolve_experiments(client, selection.experiments)
    if not experiments:
        raise CompareError("this MLflow store has no experiments: run a sweep first (linear-sweep --multirun ...)")
    names = {e.experiment_id: e.name for e in experiments}
    runs = search_all(client, list(names), f"tags.`{TAG_ROLE}` = 'trial'")
    all_runs = runs
    if selection.studies:
        wanted = selection.studies
        runs = [r for r in runs if _study_matches(r.data.tags.get(TAG_STUDY), wanted)]
    if selection.tags:
        parents = _parent_tags(client, runs)
        runs = [r for r in runs if all({**parents.get(r.data.tags.get(TAG_PARENT), {}), **r.data.tags}.get(k) == v
                                       for k, v in selection.tags.items())]
    if not runs:
        studies = pd.Series([r.data.tags.get(TAG_STUDY) or "(no study tag)" for r in all_runs]).value_counts()
        found = ("; studies there: " + ", ".join(f"{s} ({n} trials)" for s, n in studies.items())
                 if len(studies) else "")
        raise CompareError(f"empty selection: no trial runs (tag {TAG_ROLE}=trial) match {selection.describe()} "
                           f"in experiment(s) {', '.join(map(repr, names.values()))}: "
                           f"{len(all_runs)} trial runs there{found}")
    return runs_frame(runs, names), experiments


def _study_matches(study: Optional[str], wanted: Sequence[str]) -> bool:
    return study is not None and any(study == w or study.startswith(w + "[") for w in wanted)


def _parent_tags(client, runs) -> Dict[str, Dict[str, str]]:
    out = {}
    for pid in {r.data.tags.get(TAG_PARENT) for r in runs} - {None}:
        try:
            out[pid] = dict(client.get_run(pid).data.tags)
        except Exception:  # a deleted parent: its tags just don't select
            out[pid] = {}
    return out


def family_labels(df: pd.DataFrame, group_by: Sequence[str]) -> pd.Series:
    """One label per run: the group-by value ("svm"), or "k=v, k=v" for several keys."""
    missing = [g for g in group_by if g not in df.columns]
    if missing:
        known = ", ".join(c for c in df.columns if not c.startswith("metric."))
        raise CompareError(f"--group-by {', '.join(missing)}: not a param or column of the selected runs; "
                           f"known: {known}")

    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return "(none)"
        return f"{v:g}" if isinstance(v, float) else str(v)

    if len(group_by) == 1:
        return df[group_by[0]].map(fmt).astype(str)
    return df.apply(lambda r: ", ".join(f"{g}={fmt(r[g])}" for g in group_by), axis=1).astype(str)


# ---------------------------------------------------------------------------------------------
# Per-family summary
# ---------------------------------------------------------------------------------------------
@dataclass
class FamilySummary:
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


# ---------------------------------------------------------------------------------------------
# Loading a run back: config.yaml, weights.pt, the dataset
# ---------------------------------------------------------------------------------------------
class RunUnavailable(Exception):
    """A run's config, weights or dataset could not be loaded (the report says why)."""


@dataclass
class Evaluation:
    test_acc: float
    per_class: np.ndarray  # (C,) test accuracy per class
    class_names: List[str]
    image_shape: Tuple[int, int, int]
    W: Any  # torch.Tensor (D, C) on the CPU


class RunLoader:
    """Downloads and caches trial artifacts; evaluates saved weights on the run's dataset."""

    def __init__(self, client, workdir: Path, data_root: Optional[str] = None, device: Optional[str] = None):
        self.client, self.workdir = client, Path(workdir)
        self.data_root, self.device = data_root, device
        self._evals: Dict[str, Evaluation] = {}

    def artifact(self, run_id: str, path: str) -> Path:
        dst = self.workdir / run_id
        if (dst / path).is_file():
            return dst / path
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception as e:
            raise RunUnavailable(f"run {run_id} has no usable {path} artifact ({type(e).__name__}: {e})") from None

    def config(self, run_id: str):
        """The run's config.yaml (with --data-root applied)."""
        from omegaconf import OmegaConf

        path = self.artifact(run_id, "config.yaml")
        try:
            cfg = OmegaConf.load(path)
        except Exception as e:
            raise RunUnavailable(f"run {run_id}: config.yaml cannot be read ({e})") from None
        if self.data_root is not None:
            cfg.dataset.root = self.data_root
        return cfg

    def eval_device(self, cfg):
        import torch

        from .data import resolve_device

        kind = self.device or cfg.device.type
        if kind == "cuda" and not torch.cuda.is_available():
            kind = "cpu"  # evaluation is cheap: the CPU will do
        return resolve_device(kind)

    def evaluate(self, run_id: str) -> Evaluation:
        """Test accuracy (overall and per class) of the run's weights.pt on its dataset."""
        if run_id in self._evals:
            return self._evals[run_id]
        import linear_models as lm

        from .data import load_data

        cfg = self.config(run_id)
        try:
            W = lm.load_classifier(self.artifact(run_id, "weights.pt")).W
        except (ValueError, RuntimeError, OSError) as e:
            raise RunUnavailable(f"run {run_id}: weights.pt cannot be read ({e})") from None
        device = self.eval_device(cfg)
        try:
            data = load_data(cfg.dataset, cfg.model.dtype, device)
        except Exception as e:
            raise RunUnavailable(f"the dataset of run {run_id} (dataset.root={cfg.dataset.get('root')!r}) could not "
                                 f"be loaded: {type(e).__name__}: {e}; pass --data-root PATH") from None
        X, y = data["X_test"], data["y_test"]
        if X.shape[1] != W.shape[0]:
            raise RunUnavailable(f"run {run_id}: weights have {W.shape[0]} rows but the dataset has {X.shape[1]} "
                                 "features: is --data-root the dataset the run was trained on?")
        pred = lm.predict_linear_classifier(W.to(device, X.dtype), X)
        C = len(data["class_names"])
        y_np, correct = y.cpu().numpy(), (pred == y).cpu().numpy()
        per_class = np.array([correct[y_np == c].mean() if (y_np == c).any() else np.nan for c in range(C)])
        ev = Evaluation(float(correct.mean()) if len(correct) else float("nan"), per_class,
                        list(data["class_names"]), tuple(data["image_shape"]), W)
        self._evals[run_id] = ev
        return ev


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
            step = int(s.best["iterations"]) if _finite(s.best.get("iterations")) else 0
            tracker.log_metrics(s.best["run_id"], {"test_acc": ev.test_acc}, step=step)
            tracker.set_tags(s.best["run_id"], {"test_acc_of": "best of its family (selected by val_acc), "
                                                               "computed by linear-compare"})


# ---------------------------------------------------------------------------------------------
# Statistics without scipy: Student t distribution, intervals, Welch's test
# ---------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile (q in (0.5, 1)) of Student's t, by bisection on the CDF."""
    target = 2.0 * (1.0 - q)  # two-sided tail mass
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > target else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class MeanCI:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    low: float
    high: float  # 95% t interval of the mean

    def fmt(self) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.4f} (1 value)"
        return f"{self.mean:.4f} ± {self.std:.4f} [{self.low:.4f}, {self.high:.4f}]"


def mean_ci(values, confidence: float = 0.95, bounds: Tuple[float, float] = (0.0, 1.0)) -> MeanCI:
    """Mean, sample std and the Student-t interval of the mean, clipped to ``bounds`` (accuracies)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, max(bounds[0], mean - half), min(bounds[1], mean + half))


@dataclass
class Welch:
    diff: float  # mean(a) - mean(b)
    t: float
    df: float
    p: float  # two-sided


def welch_test(a: MeanCI, b: MeanCI) -> Optional[Welch]:
    """Welch's unequal-variance t-test of two means (None with fewer than 2 values on a side)."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    diff = a.mean - b.mean
    if va + vb == 0:  # no seed noise at all
        return Welch(diff, 0.0 if diff == 0 else math.copysign(math.inf, diff), math.inf, 1.0 if diff == 0 else 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
    return Welch(diff, t, df, t_two_sided_p(t, df))


# ---------------------------------------------------------------------------------------------
# Reseeding: the best config of each family, S new seeds, as MLflow runs nested under the comparison
# ---------------------------------------------------------------------------------------------
def reseed_config(summary: FamilySummary, loader: RunLoader, device: Optional[str] = None):
    """The best run's config.yaml, checked to train here (device, dataset), with test_eval=all.

    Raises CompareError before any run is created when it cannot.
    """
    from omegaconf import open_dict

    from .config import ConfigError, validate_config
    from .data import load_data, resolve_device

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
    from .data import resolve_device
    from .runner import COMPLETED, TrialSpec, run_trials, trial_params

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
        outcomes = run_trials(specs, tracker)  # leaves the runs RUNNING
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


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_accuracy_maps(df: pd.DataFrame, labels: pd.Series, families: Sequence[str], path: Path) -> Path:
    """Val accuracy over log lr x log reg, one panel per family, one colour scale for all."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from .study_report import LR_KEY, REG_KEY, accuracy_map

    plt = _plt()
    done = ranked(df)
    vals = done["val_acc"].astype(float)
    vmin, vmax = (float(vals.min()), float(vals.max())) if len(vals) else (None, None)
    n = len(families)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 1.2, 4.4), squeeze=False, constrained_layout=True)
    sc = None
    for ax, fam in zip(axes[0], families):
        sub = done[labels.loc[done.index] == fam]
        trials = [SimpleNamespace(state=TrialState.COMPLETE, value=float(r["val_acc"]),
                                  params={LR_KEY: float(r["learning_rate"]), REG_KEY: float(r["reg"])})
                  for _, r in sub.iterrows()
                  if "learning_rate" in r and "reg" in r and _finite(r["learning_rate"]) and r["learning_rate"] > 0
                  and _finite(r["reg"])]
        sc = accuracy_map(ax, trials, f"{fam} ({len(trials)} completed)", vmin=vmin, vmax=vmax) or sc
    if sc is not None:
        fig.colorbar(sc, ax=list(axes[0]), label="val accuracy")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_best_so_far(df: pd.DataFrame, labels: pd.Series, families: Sequence[str], path: Path) -> Path:
    """Best validation accuracy so far against trial number, one line per family."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for i, fam in enumerate(families):
        sub = df[labels == fam]
        single_study = sub["study"].nunique() <= 1 and sub["trial"].notna().all()
        sub = sub.sort_values(["trial", "start_time"] if single_study else ["start_time"])
        x = sub["trial"].astype(float).to_numpy() if single_study else np.arange(len(sub), dtype=float)
        val = pd.to_numeric(sub["val_acc"], errors="coerce") if "val_acc" in sub.columns else np.nan
        v = np.where(sub["state"] == "COMPLETE", val, np.nan).astype(float)
        best = np.fmax.accumulate(np.where(np.isfinite(v), v, -np.inf))
        best[~np.isfinite(best)] = np.nan
        color = f"C{i}"
        ax.step(x, best, where="post", color=color, label=f"{fam} (best {np.nanmax(v) if np.isfinite(v).any() else float('nan'):.4f})")
        ax.scatter(x, v, color=color, alpha=0.35, s=18)
    multi = any(df.loc[labels == fam, "study"].nunique() > 1 for fam in families)
    ax.set_xlabel("trial number" + (" (in start order where a family spans several studies)" if multi else ""))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val accuracy (best so far; dots: each trial)")
    ax.set_title("best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_loss_curves(client, summaries: List[FamilySummary], path: Path) -> Path:
    """Training loss (train_loss metric history) of each family's best trial, overlaid."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    positive = True
    for i, s in enumerate(summaries):
        if s.best is None:
            continue
        hist = sorted(client.get_metric_history(s.best["run_id"], "train_loss"), key=lambda m: m.step)
        pts = [(m.step, m.value) for m in hist if math.isfinite(m.value)]
        if not pts:
            continue
        positive &= all(v > 0 for _, v in pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}",
                label=f"{s.family}: lr={_sci(s.best.get('learning_rate'))} reg={_sci(s.best.get('reg'))}")
    if positive and ax.lines:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (minibatch, incl. regularization)")
    ax.set_title("loss curves of the best trials")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_templates(summaries: List[FamilySummary], loader: RunLoader, path: Path, notes: List[str]) -> Optional[Path]:
    """The best runs' class-template grids (templates.png, with class names) side by side."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = []
    for s in summaries:
        if s.best is None:
            continue
        title = (f"{s.family} (best run {s.best['run_id'][:8]})\nval acc {s.best_val_acc:.4f}, test acc {_acc(s.test_acc)}\n"
                 f"lr={_sci(s.best.get('learning_rate'))} reg={_sci(s.best.get('reg'))}")
        try:
            img = Image.open(loader.artifact(s.best["run_id"], "templates.png")).convert("RGB")
        except RunUnavailable as e:
            try:  # redraw from the weights (needs the dataset for the class names and image shape)
                import linear_models as lm

                ev = loader.evaluate(s.best["run_id"])
                img = lm.template_grid(ev.W, ev.image_shape, ev.class_names).convert("RGB")
            except RunUnavailable as e2:
                notes.append(f"class templates of {s.family}: {e}; {e2}")
                continue
        tiles.append((title, img))
    if not tiles:
        return None
    font = ImageFont.load_default()
    gap, line = 16, 13
    panels = []
    for title, img in tiles:
        if img.width < 360:  # tiny images (tests, MNIST-sized data): enlarge, pixels kept sharp
            k = -(-360 // img.width)
            img = img.resize((img.width * k, img.height * k), Image.NEAREST)
        lines = title.split("\n")
        text_w = max(int(ImageDraw.Draw(img).textlength(t, font=font)) for t in lines)
        panels.append((lines, img, max(img.width, text_w)))
    head = line * max(len(p[0]) for p in panels) + 6
    width = sum(w for _, _, w in panels) + gap * (len(panels) + 1)
    height = head + max(img.height for _, img, _ in panels) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for lines, img, w in panels:
        for i, t in enumerate(lines):
            draw.text((x, 3 + i * line), t, fill="black", font=font)
        canvas.paste(img, (x + (w - img.width) // 2, head))
        x += w + gap
    canvas.save(path, format="PNG")
    return path


def fig_per_class(summaries: List[FamilySummary], loader: RunLoader, path: Path, notes: List[str]) -> Optional[Path]:
    """Per-class test accuracy of the best models, bars side by side per class."""
    evals = []
    for s in summaries:
        if s.best is None:
            continue
        try:
            evals.append((s.family, loader.evaluate(s.best["run_id"])))
        except RunUnavailable as e:
            notes.append(f"per-class accuracy of {s.family}: {e}")
    if not evals:
        return None
    names = evals[0][1].class_names
    evals = [(f, e) for f, e in evals if e.class_names == names]
    plt = _plt()
    C, n = len(names), len(evals)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * C * max(n, 2) / 2 + 2), 4.3), constrained_layout=True)
    width = 0.8 / n
    for i, (fam, ev) in enumerate(evals):
        xs = np.arange(C) + (i - (n - 1) / 2) * width
        ax.bar(xs, ev.per_class, width=width, color=f"C{i}", label=f"{fam} (test {ev.test_acc:.4f})")
    ax.set_xticks(np.arange(C))
    ax.set_xticklabels(names, rotation=30 if C > 5 else 0, ha="right" if C > 5 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title("per-class test accuracy of the best models")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_reseeds(reseeds: pd.DataFrame, families: Sequence[str], path: Path) -> Path:
    """Each seed's val and test accuracy per family, with the mean and its 95% interval."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("val_acc", "test_acc")):
        for i, fam in enumerate(families):
            v = reseeds.loc[reseeds["family"] == fam, metric].astype(float)
            ci = mean_ci(v)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.12, 0.12, max(len(v), 1))[:len(v)], v, color=f"C{i}",
                       alpha=0.6)
            if ci.n >= 2:
                ax.errorbar([i + 0.3], [ci.mean], yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="o",
                            color="k", capsize=5)
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels(families)
        ax.set_title(f"{metric} over seeds (black: mean, 95% CI)")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Report: one list of blocks rendered as Markdown and as self-contained HTML
# ---------------------------------------------------------------------------------------------
class Report:
    def __init__(self, title: str):
        self.title = title
        self.blocks: List[Tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("h", (level, text)))

    def text(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]):
        self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = False):
        self.blocks.append(("table", (list(headers), [[str(c) for c in r] for r in rows], sortable)))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("img", (Path(path), caption)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, body in self.blocks:
            if kind == "h":
                out += ["#" * body[0] + " " + body[1], ""]
            elif kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in body] + [""]
            elif kind == "table":
                headers, rows, _ = body
                esc = lambda c: c.replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(map(esc, headers)) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows] + [""]
            elif kind == "img":
                out += [f"![{body[1]}]({body[0].name})", "", f"*{body[1]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        def inline(text: str) -> str:
            t = html.escape(text)
            t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
            return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

        parts = []
        for kind, body in self.blocks:
            if kind == "h":
                parts.append(f"<h{body[0]}>{inline(body[1])}</h{body[0]}>")
            elif kind == "p":
                parts.append(f"<p>{inline(body)}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in body) + "</ul>")
            elif kind == "table":
                headers, rows, sortable = body
                cls = ' class="sortable"' if sortable else ""
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                hint = '<p class="hint">click a column header to sort</p>' if sortable else ""
                parts.append(f"{hint}<table{cls}><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(body[0].read_bytes()).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(body[1])}">'
                             f"<figcaption>{inline(body[1])}</figcaption></figure>")
        return _HTML.format(title=html.escape(self.title), body="\n".join(parts))


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
table.sortable th {{ cursor: pointer; }}
table.sortable th:after {{ content: " \\2195"; color: #aaa; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ margin: 1em 0 2em; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.9em; }} .hint {{ color: #777; font-size: 0.8em; margin-bottom: 0; }}
code {{ background: #f3f3f3; padding: 0 3px; }}
</style></head><body>
<h1>{title}</h1>
{body}
<script>
document.querySelectorAll("table.sortable th").forEach(function (th) {{
  th.addEventListener("click", function () {{
    var table = th.closest("table"), body = table.tBodies[0];
    var rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    table.querySelectorAll("th").forEach(function (h) {{ delete h.dataset.asc; }});
    th.dataset.asc = asc ? "1" : "0";
    var idx = Array.from(th.parentNode.children).indexOf(th);
    rows.sort(function (a, b) {{
      var x = a.cells[idx].textContent, y = b.cells[idx].textContent;
      var nx = x.trim() === "" ? NaN : Number(x), ny = y.trim() === "" ? NaN : Number(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    }});
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
</script>
</body></html>
"""


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _sci(v) -> str:
    return f"{float(v):.2e}" if _finite(v) else "n/a"


def _acc(v) -> str:
    return f"{float(v):.4f}" if _finite(v) else "n/a"


def _metric_key(family: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", family)


def build_report(df: pd.DataFrame, labels: pd.Series, summaries: List[FamilySummary], *, selection: Selection,
                 uri: str, group_by: Sequence[str], top_k: int, reseeds: Optional[pd.DataFrame],
                 figures: Dict[str, Path], notes: List[str], comparison: Optional[Tuple[str, str]]) -> Report:
    fams = [s.family for s in summaries]
    rep = Report(f"linear-compare: {' vs '.join(fams)}")
    S = 0 if reseeds is None else int(reseeds.groupby("family").size().max())
    if S:
        shows = (f"**This report shows reseeded means**: each family's best configuration (selected by validation "
                 f"accuracy) was retrained with {S} new seeds; the seed changes the initial weights and the "
                 "minibatch order, the data split stays fixed. The sweep tables below are still single runs.")
    else:
        shows = ("**This report shows single best runs** (one seed each, selected by validation accuracy). "
                 "A gap between them may be seed noise: rerun with `--reseed 5` to measure it.")
    rep.text(shows)
    rep.bullets([
        f"tracking URI: `{redact(uri)}`",
        f"selection: {selection.describe()}",
        f"grouped by: {', '.join(group_by)}; studies: {', '.join(sorted(df['study'].dropna().unique())) or 'n/a'}",
        f"{len(df)} trial runs; written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ] + ([f"comparison run `{comparison[0]}` in experiment `{comparison[1]}`"] if comparison else []))

    rep.heading("Sweep summary per family")
    any_running = any(s.running for s in summaries)
    any_retried = any(s.retried for s in summaries)
    headers = ["family", "trials run", "completed", "pruned", "failed"] + (["running"] if any_running else []) + \
        (["retried"] if any_retried else []) + ["best val acc", "lr", "reg", "test acc of best", "median s/trial",
                                                 f"top-{top_k} val acc"]
    rows = []
    for s in summaries:
        b = s.best
        rows.append([s.family, s.trials, s.completed, s.pruned, s.failed] + ([s.running] if any_running else []) +
                    ([s.retried] if any_retried else []) +
                    [_acc(s.best_val_acc), _sci(b.get("learning_rate")) if b is not None else "n/a",
                     _sci(b.get("reg")) if b is not None else "n/a", _acc(s.test_acc),
                     f"{s.median_seconds:.3g}" if _finite(s.median_seconds) else "n/a",
                     ", ".join(_acc(v) for v in s.top["val_acc"])])
    rep.table(headers, rows)
    rep.text("Counts are of MLflow trial runs by their Optuna state (`optuna.trial_state`)"
             + ("; `retried`: failed trials the sweep re-queued (their retry is counted separately)" if any_retried else "")
             + ". Median s/trial: the `trial_seconds` metric (training time, amortized over trials trained together). "
             "Best: highest val accuracy (selection never looks at test accuracy). Test accuracy of the best: "
             + "; ".join(f"{s.family}: {s.test_acc_source}" for s in summaries) + ".")
    gap = [s for s in summaries if s.best is not None]
    if len(gap) >= 2:
        a, b = sorted(gap, key=lambda s: -s.best_val_acc)[:2]
        test_gap = (f"; test accuracy {100 * (a.test_acc - b.test_acc):+.2f} points"
                    if _finite(a.test_acc) and _finite(b.test_acc) else "")
        lead = (f"{a.family} and {b.family} tie on val accuracy" if a.best_val_acc == b.best_val_acc else
                f"{a.family} leads {b.family} by {100 * (a.best_val_acc - b.best_val_acc):.2f} points of val accuracy")
        rep.text(f"Best single runs: {lead}{test_gap} (one seed each{'' if S else ': see --reseed'}).")

    for s in summaries:
        rep.heading(f"Top {top_k} configurations: {s.family}", 3)
        if s.top.empty:
            rep.text("no completed trials")
            continue
        rep.table(["rank", "val acc", "test acc", "lr", "reg", "study", "trial", "run"],
                  [[i + 1, _acc(r["val_acc"]), _acc(r.get("test_acc")), _sci(r.get("learning_rate")),
                    _sci(r.get("reg")), r["study"], r["trial"], r["run_id"]] for i, (_, r) in enumerate(s.top.iterrows())])

    if S:
        rep.heading("Seed noise: reseeded best configurations")
        cis = {s.family: {m: mean_ci(reseeds.loc[reseeds["family"] == s.family, m]) for m in ("val_acc", "test_acc")}
               for s in summaries if s.best is not None}
        rows = []
        by_family = {s.family: s for s in summaries}
        for fam, c in cis.items():
            sub = reseeds[reseeds["family"] == fam]
            rows.append([fam, len(sub), int((sub["status"] == "completed").sum()), c["val_acc"].fmt(), c["test_acc"].fmt(),
                         f"{_acc(by_family[fam].best_val_acc)} / {_acc(by_family[fam].test_acc)}",
                         ", ".join(str(x) for x in sub["seed"])])
        rep.table(["family", "reseeds", "completed", "val acc mean ± std [95% CI]", "test acc mean ± std [95% CI]",
                   "best sweep run (val / test)", "seeds"], rows)
        rep.text("95% intervals: mean ± t(0.975, n-1)·std/√n (Student t, clipped to [0, 1]). The original best run "
                 "is not among the reseeds: it was selected for its high val accuracy, so its numbers are biased "
                 "upward (compare its column with the means).")
        rep.heading("Is the gap between families larger than the seed noise?", 3)
        rep.text("Test: Welch's unequal-variance t-test on the reseeded test accuracies (two-sided, α = 0.05); the "
                 "val-accuracy test and whether the 95% intervals overlap are shown too (non-overlap is the "
                 "stricter criterion).")
        rows, verdicts = [], []
        names = list(cis)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = names[i], names[j]
                if cis[a]["test_acc"].mean < cis[b]["test_acc"].mean:
                    a, b = b, a
                wt, wv = welch_test(cis[a]["test_acc"], cis[b]["test_acc"]), welch_test(cis[a]["val_acc"], cis[b]["val_acc"])
                ta, tb = cis[a]["test_acc"], cis[b]["test_acc"]
                overlap = not (ta.low > tb.high or tb.low > ta.high) if ta.n >= 2 and tb.n >= 2 else None
                rows.append([f"{a} − {b}", f"{100 * (ta.mean - tb.mean):+.2f}",
                             f"t={wt.t:.2f}, df={wt.df:.1f}, p={wt.p:.3g}" if wt else "n/a",
                             f"{100 * wv.diff:+.2f} (p={wv.p:.3g})" if wv else "n/a",
                             "n/a" if overlap is None else ("overlap" if overlap else "disjoint")])
                if wt is None:
                    verdicts.append(f"{a} vs {b}: too few completed reseeds to tell.")
                elif wt.p < 0.05:
                    verdicts.append(f"**{a} beats {b} by {100 * wt.diff:.2f} points of test accuracy, more than the "
                                    f"seed noise** (Welch p={wt.p:.3g}; intervals {'overlap' if overlap else 'are disjoint'}).")
                else:
                    verdicts.append(f"**{a} vs {b}: the {100 * wt.diff:.2f}-point test-accuracy gap is within the seed "
                                    f"noise** (Welch p={wt.p:.3g}): no winner at this number of seeds.")
        rep.table(["difference", "test acc gap (points)", "Welch t-test (test)", "val acc gap (points)",
                   "95% intervals (test)"], rows)
        rep.bullets(verdicts)
        if "reseeds" in figures:
            rep.figure(figures["reseeds"], "each reseed's val and test accuracy per family; black: mean and 95% interval")

    rep.heading("Figures")
    captions = {
        "accuracy_map": "validation accuracy over log10 learning rate x log10 regularization, one panel per family, "
                        "one colour scale (red star: best)",
        "best_so_far": "best validation accuracy so far against trial number (dots: each completed trial)",
        "loss_curves": "training loss of each family's best trial (the train_loss metric history)",
        "templates": "class templates (weights as images, bias dropped) of each family's best run, side by side",
        "per_class": "per-class test accuracy of each family's best run",
    }
    for key, caption in captions.items():
        if key in figures:
            rep.figure(figures[key], caption)
    if notes:
        rep.heading("Not shown", 3)
        rep.bullets(notes)

    rep.heading("All trial runs")
    cols = [c for c in ["study", "trial", "state", "val_acc", "test_acc", "learning_rate", "reg", "train_acc",
                        "trial_seconds", "run_id"] if c in df.columns]
    table = df.assign(family=labels).sort_values(["family", "study", "trial"])
    rep.table(["family"] + cols, [[r["family"]] + [_cell(r[c]) for c in cols] for _, r in table.iterrows()],
              sortable=True)
    return rep


def _cell(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="linear-compare",
        description="Compare the loss families (or any grouped param) of linear-sweeps sweeps stored in MLflow: "
                    "a Markdown + HTML report with tables, seeds and figures.")
    p.add_argument("--tracking-uri", metavar="URI",
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_URI} in the cwd)")
    p.add_argument("--experiment", metavar="NAME", action="append", default=[],
                   help="MLflow experiment to read (repeatable; default: all)")
    p.add_argument("--study", metavar="NAME", action="append", default=[],
                   help="Optuna study name (repeatable); a sweep's name selects all its [cell] studies")
    p.add_argument("--tag", metavar="KEY=VALUE", action="append", default=[],
                   help="keep trial runs whose own or parent study run's tag KEY equals VALUE (repeatable, all must hold)")
    p.add_argument("--group-by", metavar="PARAM", action="append", default=None,
                   help="param (or column) whose values are the families compared (repeatable; default: loss)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="configurations listed per family (default 5)")
    p.add_argument("--reseed", type=int, default=0, metavar="S",
                   help="retrain each family's best config with S new seeds (S >= 2) and test the gap against the seed noise")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where --reseed trains (default: the device of the best run's config)")
    p.add_argument("--data-root", metavar="PATH",
                   help="dataset location when the runs' config.yaml points elsewhere (used to compute missing "
                        "test accuracies, per-class accuracy and for --reseed)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: ./comparison-YYYYmmdd-HHMMSS)")
    p.add_argument("--csv", metavar="PATH", help="also write the trial-run DataFrame as CSV")
    p.add_argument("--parquet", metavar="PATH", help="also write the trial-run DataFrame as Parquet")
    p.add_argument("--no-log", action="store_true",
                   help="write nothing to MLflow (no comparison run; reseeds are not logged either)")
    return p


def _parse_tags(items: Sequence[str]) -> Dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CompareError(f"--tag must be KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """The whole command; returns what it produced (paths, DataFrames, run ids)."""
    if args.top_k < 1:
        raise CompareError(f"--top-k must be an integer >= 1, got {args.top_k}")
    if args.reseed < 0 or args.reseed == 1:
        raise CompareError(f"--reseed must be 0 or an integer >= 2 (an interval needs two seeds), got {args.reseed}")
    selection = Selection(list(args.experiment), list(args.study), _parse_tags(args.tag))
    group_by = args.group_by or ["loss"]
    uri = resolve_tracking_uri(args.tracking_uri)
    client = open_client(uri)
    try:
        df, _ = load_trials(client, selection)
    except MlflowException as e:
        raise CompareError(f"cannot read the MLflow store at {redact(uri)}: {e}") from None
    labels = family_labels(df, group_by)
    summaries = summarize(df, group_by, args.top_k)
    log.info("%d trial runs in %d families: %s", len(df), len(summaries), ", ".join(s.family for s in summaries))
    families = [s.family for s in summaries]
    out = Path(args.out or f"comparison-{time.strftime('%Y%m%d-%H%M%S')}")
    for folder in [out] + [Path(p).parent for p in (args.csv, args.parquet) if p]:
        folder.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="linear-compare-") as tmp:
        loader = RunLoader(client, Path(tmp), args.data_root, args.device)
        bases = {s.family: reseed_config(s, loader, args.device) for s in summaries
                 if args.reseed and s.best is not None}  # fail before anything is logged
        for stale in [f"{k}.png" for k in FIGURE_KEYS] + ["reseeds.csv"]:  # from an earlier report in --out
            (out / stale).unlink(missing_ok=True)
        exp_name = df["experiment"].value_counts().index[0]  # the experiment holding most of the selected trials
        tracker = comparison_id = None
        if not args.no_log:
            from .tracking import Tracker

            tracker = Tracker(uri, exp_name)
            comparison_id = tracker.create_run(
                f"comparison {' vs '.join(families)}",
                tags={TAG_ROLE: "comparison", "compare.selection": selection.describe(),
                      "compare.group_by": ",".join(group_by), "compare.families": ",".join(families),
                      "compare.shows": f"reseeded means ({args.reseed} seeds)" if args.reseed else "single best runs"},
                params={"group_by": ",".join(group_by), "top_k": args.top_k, "reseed": args.reseed,
                        "experiments": ",".join(selection.experiments) or "all",
                        "studies": ",".join(selection.studies) or "all", "trial_runs": len(df)})
        status = "FAILED"
        try:
            result = _report(args, df, labels, summaries, loader, bases, tracker, comparison_id, exp_name,
                             selection, group_by, uri, out)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if tracker is not None:
                tracker.end_run(comparison_id, status)
    return result


FIGURE_KEYS = ("accuracy_map", "best_so_far", "loss_curves", "templates", "per_class", "reseeds")


def _report(args, df, labels, summaries, loader, bases, tracker, comparison_id, exp_name, selection, group_by,
            uri, out) -> Dict[str, Any]:
    """Test accuracies, reseeds, figures, report files and the comparison run's metrics and artifacts."""
    families = [s.family for s in summaries]
    fill_test_accuracy(summaries, loader, tracker)
    reseeds = None
    if bases:
        frames = []
        for s in summaries:
            if s.family not in bases:
                continue
            seed0 = int(s.best["seed"]) if _finite(s.best.get("seed")) else 0
            seeds = [seed0 + i for i in range(1, args.reseed + 1)]
            s.reseed = reseed_family(s, bases[s.family], seeds, tracker, comparison_id)
            frames.append(s.reseed)
        reseeds = pd.concat(frames, ignore_index=True)
        reseeds.to_csv(out / "reseeds.csv", index=False)
    notes: List[str] = []
    figures = {
        "accuracy_map": fig_accuracy_maps(df, labels, families, out / "accuracy_map.png"),
        "best_so_far": fig_best_so_far(df, labels, families, out / "best_so_far.png"),
        "loss_curves": fig_loss_curves(loader.client, summaries, out / "loss_curves.png"),
    }
    for key, fn in (("templates", fig_templates), ("per_class", fig_per_class)):
        path = fn(summaries, loader, out / f"{key}.png", notes)
        if path is not None:
            figures[key] = path
    if reseeds is not None:
        figures["reseeds"] = fig_reseeds(reseeds, [s.family for s in summaries if s.reseed is not None],
                                         out / "reseeds.png")
    df.to_csv(out / "trials.csv", index=False)
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.parquet:
        df.to_parquet(args.parquet, index=False)
    report = build_report(df, labels, summaries, selection=selection, uri=uri, group_by=group_by,
                          top_k=args.top_k, reseeds=reseeds, figures=figures, notes=notes,
                          comparison=(comparison_id, exp_name) if comparison_id else None)
    (out / "report.md").write_text(report.markdown())
    (out / "report.html").write_text(report.html())
    if tracker is not None:
        metrics = {}
        for s in summaries:
            key = _metric_key(s.family)
            metrics.update({f"{key}.best_val_acc": s.best_val_acc, f"{key}.trials": s.trials,
                            f"{key}.completed": s.completed})
            if _finite(s.test_acc):
                metrics[f"{key}.best_test_acc"] = s.test_acc
            if s.reseed is not None:
                for m in ("val_acc", "test_acc"):
                    ci = mean_ci(s.reseed[m])
                    if ci.n:
                        metrics[f"{key}.reseed_{m}_mean"] = ci.mean
                    if ci.n >= 2:
                        metrics[f"{key}.reseed_{m}_std"] = ci.std
        tracker.log_metrics(comparison_id, {k: v for k, v in metrics.items() if _finite(v)})
        tracker.log_artifacts(comparison_id, out)
    return {"out": out, "trials": df, "summaries": summaries, "reseeds": reseeds, "figures": figures,
            "comparison_run_id": comparison_id, "experiment": exp_name, "notes": notes}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `linear-compare`; returns the exit code (0 ok, 2 error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("linear-compare: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        result = run(args)
    except CompareError as e:
        print(f"linear-compare: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    for s in result["summaries"]:
        line = (f"{s.family}: {s.trials} trials ({s.completed} completed, {s.pruned} pruned, {s.failed} failed), "
                f"best val_acc {_acc(s.best_val_acc)} test_acc {_acc(s.test_acc)}")
        if s.reseed is not None:
            line += f"; reseeded test_acc {mean_ci(s.reseed['test_acc']).fmt()}"
        print(line)
    where = f"; comparison run {result['comparison_run_id']} in experiment {result['experiment']!r}" \
        if result["comparison_run_id"] else ""
    print(f"report: {result['out'] / 'report.md'} and report.html{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
