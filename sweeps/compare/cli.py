"""The command line: arguments, the whole run (select, summarize, reseed, draw, write, log), main."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd
from mlflow.exceptions import MlflowException

from ..errors import say
from ..tracking import TAG_ROLE
from .edges import fill_edges
from .errors import EXIT_ERROR, CompareError
from .figures import fig_accuracy_maps, fig_best_so_far, fig_loss_curves, fig_per_class, fig_reseeds, fig_templates
from .fmt import acc, finite, metric_key
from .report import build_report
from .reseed import reseed_config, reseed_families
from .runs import RunLoader
from .selection import DEFAULT_URI, Selection, family_labels, load_trials, open_client, redact, resolve_tracking_uri
from .stats import mean_ci
from .summary import FamilySummary, fill_test_accuracy, summarize

# The package's logger: every module's log lines (sweeps.compare.*) reach the handler main adds.
log = logging.getLogger("sweeps.compare")

FIGURE_KEYS = ("accuracy_map", "best_so_far", "loss_curves", "templates", "per_class", "reseeds")


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
        tracker, comparison_id = _open_comparison_run(args, uri, exp_name, selection, group_by, summaries, len(df))
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


def _open_comparison_run(args, uri: str, exp_name: str, selection: Selection, group_by: Sequence[str],
                         summaries: List[FamilySummary], n_trials: int):
    """(Tracker, run id) of the new comparison run; (None, None) with --no-log."""
    if args.no_log:
        return None, None
    from ..tracking import Tracker

    families = [s.family for s in summaries]
    tracker = Tracker(uri, exp_name)
    comparison_id = tracker.create_run(
        f"comparison {' vs '.join(families)}",
        tags={TAG_ROLE: "comparison", "compare.selection": selection.describe(),
              "compare.group_by": ",".join(group_by), "compare.families": ",".join(families),
              "compare.shows": f"reseeded means ({args.reseed} seeds)" if args.reseed else "single best runs"},
        params={"group_by": ",".join(group_by), "top_k": args.top_k, "reseed": args.reseed,
                "experiments": ",".join(selection.experiments) or "all",
                "studies": ",".join(selection.studies) or "all", "trial_runs": n_trials})
    return tracker, comparison_id


def _report(args, df, labels, summaries, loader, bases, tracker, comparison_id, exp_name, selection, group_by,
            uri, out) -> Dict[str, Any]:
    """Test accuracies, reseeds, figures, report files and the comparison run's metrics and artifacts."""
    fill_test_accuracy(summaries, loader, tracker)
    fill_edges(summaries, df, labels, loader.client)
    reseeds = reseed_families(summaries, bases, args.reseed, tracker, comparison_id)
    if reseeds is not None:
        reseeds.to_csv(out / "reseeds.csv", index=False)
    notes: List[str] = []
    figures = _draw_figures(df, labels, summaries, loader, reseeds, out, notes)
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
        tracker.log_metrics(comparison_id, _comparison_metrics(summaries))
        tracker.log_artifacts(comparison_id, out)
    return {"out": out, "trials": df, "summaries": summaries, "reseeds": reseeds, "figures": figures,
            "comparison_run_id": comparison_id, "experiment": exp_name, "notes": notes}


def _draw_figures(df: pd.DataFrame, labels: pd.Series, summaries: List[FamilySummary], loader: RunLoader,
                  reseeds: Optional[pd.DataFrame], out: Path, notes: List[str]) -> Dict[str, Path]:
    """{figure key: PNG path in ``out``}; a figure that cannot be drawn is left out (``notes`` say why)."""
    families = [s.family for s in summaries]
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
    return figures


def _comparison_metrics(summaries: List[FamilySummary]) -> Dict[str, float]:
    """``<family>.best_val_acc``, ``.trials``, ``.completed``, ``.best_test_acc`` and the reseed means / stds."""
    metrics = {}
    for s in summaries:
        key = metric_key(s.family)
        metrics.update({f"{key}.best_val_acc": s.best_val_acc, f"{key}.trials": s.trials,
                        f"{key}.completed": s.completed})
        if finite(s.test_acc):
            metrics[f"{key}.best_test_acc"] = s.test_acc
        if s.reseed is not None:
            for m in ("val_acc", "test_acc"):
                ci = mean_ci(s.reseed[m])
                if ci.n:
                    metrics[f"{key}.reseed_{m}_mean"] = ci.mean
                if ci.n >= 2:
                    metrics[f"{key}.reseed_{m}_std"] = ci.std
    return {k: v for k, v in metrics.items() if finite(v)}


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
        say(str(e), program="linear-compare")  # the format of linear-sweep's errors: one line, one hint
        return EXIT_ERROR
    for s in result["summaries"]:
        line = (f"{s.family}: {s.trials} trials ({s.completed} completed, {s.pruned} pruned, {s.failed} failed), "
                f"best val_acc {acc(s.best_val_acc)} test_acc {acc(s.test_acc)}")
        if s.reseed is not None:
            line += f"; reseeded test_acc {mean_ci(s.reseed['test_acc']).fmt()}"
        print(line)
    where = f"; comparison run {result['comparison_run_id']} in experiment {result['experiment']!r}" \
        if result["comparison_run_id"] else ""
    print(f"report: {result['out'] / 'report.md'} and report.html{where}")
    return 0
