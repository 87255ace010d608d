"""Selection: tracking URI, experiments, studies, tags -> one DataFrame of trial runs."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from ..tracking import TAG_FAILURE, TAG_PARENT, TAG_RETRY_OF, TAG_ROLE, TAG_STUDY, TAG_TRIAL_NUMBER, TAG_TRIAL_STATE
from .errors import CompareError

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow run status -> Optuna-like state, for runs without the optuna.trial_state tag.
_STATE_FROM_STATUS = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING",
                      "SCHEDULED": "RUNNING"}
_BASE_COLUMNS = ["run_id", "run_name", "experiment", "study", "trial", "state", "status", "failure_reason",
                 "parent_run_id", "start_time", "end_time", "duration_s"]


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

    Columns: ``_BASE_COLUMNS`` + ``retry_of``, then each param under its own name (numbers where
    every value is one), then each metric; a metric whose name is also a param's (or a base
    column's) is stored as ``metric.<name>``. ``start_time`` / ``end_time`` are UTC timestamps.
    """
    rows = [_run_row(r, experiment_names) for r in runs]
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


def _run_row(r, experiment_names: Dict[str, str]) -> dict:
    """One MLflow run -> a dict (identity, state, ``param:<k>`` and ``metric:<k>`` entries)."""
    tags, info = r.data.tags, r.info
    state = tags.get(TAG_TRIAL_STATE) or _STATE_FROM_STATUS.get(info.status, info.status)
    end = info.end_time
    number = tags.get(TAG_TRIAL_NUMBER)
    row = {
        "run_id": info.run_id, "run_name": info.run_name,
        "experiment": experiment_names.get(info.experiment_id, info.experiment_id),
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
    return row


def load_trials(client, selection: Selection) -> Tuple[pd.DataFrame, list]:
    """The selected trial runs as a DataFrame (see :func:`runs_frame`), and the experiments searched.

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
