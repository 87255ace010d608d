"""The report's content: which blocks (text, tables, figures) say what, section by section."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from .document import Report
from .fmt import acc, cell, finite, sci
from .selection import Selection, redact
from .stats import MeanCI, mean_ci, welch_test
from .summary import FamilySummary

FIGURE_CAPTIONS = {
    "accuracy_map": "validation accuracy over log10 learning rate x log10 regularization, one panel per family, "
                    "one colour scale (red star: best)",
    "best_so_far": "best validation accuracy so far against trial number (dots: each completed trial)",
    "loss_curves": "training loss of each family's best trial (the train_loss metric history)",
    "templates": "class templates (weights as images, bias dropped) of each family's best run, one block per family",
    "per_class": "per-class test accuracy of each family's best run",
}


def build_report(df: pd.DataFrame, labels: pd.Series, summaries: List[FamilySummary], *, selection: Selection,
                 uri: str, group_by: Sequence[str], top_k: int, reseeds: Optional[pd.DataFrame],
                 figures: Dict[str, Path], notes: List[str], comparison: Optional[Tuple[str, str]]) -> Report:
    """The whole report.

    df: the trials frame (one row per trial run); labels: its family label per row; reseeds: the
    rows of every reseeded run (columns family, seed, status, val_acc, test_acc) or None;
    figures: {figure key: PNG path}; notes: why figures are missing; comparison: (run id,
    experiment) of the comparison run, None with --no-log.
    """
    fams = [s.family for s in summaries]
    rep = Report(f"linear-compare: {' vs '.join(fams)}")
    n_seeds = 0 if reseeds is None else int(reseeds.groupby("family").size().max())
    _header(rep, df, selection=selection, uri=uri, group_by=group_by, n_seeds=n_seeds, comparison=comparison)
    _summary_section(rep, summaries, top_k, n_seeds)
    _top_configurations(rep, summaries, top_k)
    if n_seeds:
        _reseed_section(rep, summaries, reseeds, figures)
    _figures_section(rep, figures, notes)
    _trials_section(rep, df, labels)
    return rep


def _header(rep: Report, df: pd.DataFrame, *, selection: Selection, uri: str, group_by: Sequence[str],
            n_seeds: int, comparison: Optional[Tuple[str, str]]) -> None:
    """What the report shows (single runs or reseeded means) and what it was made from."""
    if n_seeds:
        shows = (f"**This report shows reseeded means**: each family's best configuration (selected by validation "
                 f"accuracy) was retrained with {n_seeds} new seeds; the seed changes the initial weights and the "
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


def _summary_section(rep: Report, summaries: List[FamilySummary], top_k: int, n_seeds: int) -> None:
    """One row per family (counts, best run, its test accuracy), then the gap between the best two."""
    rep.heading("Sweep summary per family")
    any_running = any(s.running for s in summaries)
    any_retried = any(s.retried for s in summaries)
    headers = (["family", "trials run", "completed", "pruned", "failed"] + (["running"] if any_running else [])
               + (["retried"] if any_retried else [])
               + ["best val acc", "lr", "reg", "test acc of best", "median s/trial", f"top-{top_k} val acc"])
    rows = []
    for s in summaries:
        b = s.best
        rows.append([s.family, s.trials, s.completed, s.pruned, s.failed] + ([s.running] if any_running else []) +
                    ([s.retried] if any_retried else []) +
                    [acc(s.best_val_acc), sci(b.get("learning_rate")) if b is not None else "n/a",
                     sci(b.get("reg")) if b is not None else "n/a", acc(s.test_acc),
                     f"{s.median_seconds:.3g}" if finite(s.median_seconds) else "n/a",
                     ", ".join(acc(v) for v in s.top["val_acc"])])
    rep.table(headers, rows)
    rep.text("Counts are of MLflow trial runs by their Optuna state (`optuna.trial_state`)"
             + ("; `retried`: failed trials the sweep re-queued (their retry is counted separately)" if any_retried else "")
             + ". Median s/trial: the `trial_seconds` metric (training time, amortized over trials trained together). "
             "Best: highest val accuracy (selection never looks at test accuracy). Test accuracy of the best: "
             + "; ".join(f"{s.family}: {s.test_acc_source}" for s in summaries) + ".")
    _edge_lines(rep, summaries)
    done = [s for s in summaries if s.best is not None]
    if len(done) >= 2:
        a, b = sorted(done, key=lambda s: -s.best_val_acc)[:2]
        test_gap = (f"; test accuracy {100 * (a.test_acc - b.test_acc):+.2f} points"
                    if finite(a.test_acc) and finite(b.test_acc) else "")
        lead = (f"{a.family} and {b.family} tie on val accuracy" if a.best_val_acc == b.best_val_acc else
                f"{a.family} leads {b.family} by {100 * (a.best_val_acc - b.best_val_acc):.2f} points of val accuracy")
        rep.text(f"Best single runs: {lead}{test_gap} (one seed each{'' if n_seeds else ': see --reseed'}).")


def _edge_lines(rep: Report, summaries: List[FamilySummary]) -> None:
    """One line per family: is its best learning rate / reg at a bound of what was searched?"""
    lines = [s.edges.line(s.family) for s in summaries if s.edges is not None]
    if lines:
        rep.text("Best configuration against the search range (a best value within 1% of a bound: the optimum "
                 "may lie beyond it):")
        rep.bullets(lines)


def _top_configurations(rep: Report, summaries: List[FamilySummary], top_k: int) -> None:
    """The top-k completed runs of each family, best first."""
    for s in summaries:
        rep.heading(f"Top {top_k} configurations: {s.family}", 3)
        if s.top.empty:
            rep.text("no completed trials")
            continue
        rep.table(["rank", "val acc", "test acc", "lr", "reg", "study", "trial", "run"],
                  [[i + 1, acc(r["val_acc"]), acc(r.get("test_acc")), sci(r.get("learning_rate")),
                    sci(r.get("reg")), r["study"], r["trial"], r["run_id"]] for i, (_, r) in enumerate(s.top.iterrows())])


def _reseed_section(rep: Report, summaries: List[FamilySummary], reseeds: pd.DataFrame,
                    figures: Dict[str, Path]) -> None:
    """Mean ± std [95% CI] of the reseeds per family, then each pair's Welch test and a verdict."""
    rep.heading("Seed noise: reseeded best configurations")
    cis = {s.family: {m: mean_ci(reseeds.loc[reseeds["family"] == s.family, m]) for m in ("val_acc", "test_acc")}
           for s in summaries if s.best is not None}
    by_family = {s.family: s for s in summaries}
    rows = []
    for fam, c in cis.items():
        sub = reseeds[reseeds["family"] == fam]
        rows.append([fam, len(sub), int((sub["status"] == "completed").sum()), c["val_acc"].fmt(), c["test_acc"].fmt(),
                     f"{acc(by_family[fam].best_val_acc)} / {acc(by_family[fam].test_acc)}",
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
            row, verdict = _compare_pair(names[i], names[j], cis)
            rows.append(row)
            verdicts.append(verdict)
    rep.table(["difference", "test acc gap (points)", "Welch t-test (test)", "val acc gap (points)",
               "95% intervals (test)"], rows)
    rep.bullets(verdicts)
    if "reseeds" in figures:
        rep.figure(figures["reseeds"], "each reseed's val and test accuracy per family; black: mean and 95% interval")


def _compare_pair(a: str, b: str, cis: Dict[str, Dict[str, MeanCI]]) -> Tuple[List[str], str]:
    """The table row and the verdict of families ``a`` and ``b`` (the higher test mean first)."""
    if cis[a]["test_acc"].mean < cis[b]["test_acc"].mean:
        a, b = b, a
    wt, wv = welch_test(cis[a]["test_acc"], cis[b]["test_acc"]), welch_test(cis[a]["val_acc"], cis[b]["val_acc"])
    ta, tb = cis[a]["test_acc"], cis[b]["test_acc"]
    overlap = not (ta.low > tb.high or tb.low > ta.high) if ta.n >= 2 and tb.n >= 2 else None
    row = [f"{a} − {b}", f"{100 * (ta.mean - tb.mean):+.2f}",
           f"t={wt.t:.2f}, df={wt.df:.1f}, p={wt.p:.3g}" if wt else "n/a",
           f"{100 * wv.diff:+.2f} (p={wv.p:.3g})" if wv else "n/a",
           "n/a" if overlap is None else ("overlap" if overlap else "disjoint")]
    if wt is None:
        verdict = f"{a} vs {b}: too few completed reseeds to tell."
    elif wt.p < 0.05:
        verdict = (f"**{a} beats {b} by {100 * wt.diff:.2f} points of test accuracy, more than the "
                   f"seed noise** (Welch p={wt.p:.3g}; intervals {'overlap' if overlap else 'are disjoint'}).")
    else:
        verdict = (f"**{a} vs {b}: the {100 * wt.diff:.2f}-point test-accuracy gap is within the seed "
                   f"noise** (Welch p={wt.p:.3g}): no winner at this number of seeds.")
    return row, verdict


def _figures_section(rep: Report, figures: Dict[str, Path], notes: List[str]) -> None:
    """The figures that were drawn, then why the others are missing."""
    rep.heading("Figures")
    for key, caption in FIGURE_CAPTIONS.items():
        if key in figures:
            rep.figure(figures[key], caption)
    if notes:
        rep.heading("Not shown", 3)
        rep.bullets(notes)


def _trials_section(rep: Report, df: pd.DataFrame, labels: pd.Series) -> None:
    """Every trial run, one row each (sortable in the HTML)."""
    rep.heading("All trial runs")
    cols = [c for c in ["study", "trial", "state", "val_acc", "test_acc", "learning_rate", "reg", "train_acc",
                        "trial_seconds", "run_id"] if c in df.columns]
    table = df.assign(family=labels).sort_values(["family", "study", "trial"])
    rep.table(["family"] + cols, [[r["family"]] + [cell(r[c]) for c in cols] for _, r in table.iterrows()],
              sortable=True)
