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

Modules: selection (MLflow -> trials DataFrame), summary (per family), runs (artifacts, test
accuracy from weights), stats (t intervals, Welch; scipy.stats), edges (is a best config at a
bound of its search space?), reseed, figures, report (what the report says), document
(Markdown / HTML through templates/report.html.j2), cli (arguments, the run, main).
"""
from .cli import build_parser, main, run
from .document import Report
from .edges import Edge, EdgeCheck, fill_edges, find_edges, parse_search_space
from .errors import EXIT_ERROR, CompareError
from .fmt import acc, cell, finite, metric_key, sci
from .report import build_report
from .reseed import reseed_config, reseed_families, reseed_family
from .runs import Evaluation, RunLoader, RunUnavailable
from .selection import (DEFAULT_URI, Selection, family_labels, load_trials, open_client, redact, resolve_experiments,
                        resolve_tracking_uri, runs_frame, search_all)
from .stats import MeanCI, Welch, mean_ci, t_quantile, t_two_sided_p, welch_test
from .summary import FamilySummary, fill_test_accuracy, ranked, summarize

__all__ = [
    "CompareError", "EXIT_ERROR", "DEFAULT_URI",
    "Selection", "resolve_tracking_uri", "redact", "open_client", "resolve_experiments", "search_all", "runs_frame",
    "load_trials", "family_labels",
    "FamilySummary", "ranked", "summarize", "fill_test_accuracy",
    "RunLoader", "RunUnavailable", "Evaluation",
    "MeanCI", "Welch", "mean_ci", "welch_test", "t_quantile", "t_two_sided_p",
    "Edge", "EdgeCheck", "find_edges", "fill_edges", "parse_search_space",
    "reseed_config", "reseed_family", "reseed_families",
    "Report", "build_report",
    "acc", "sci", "cell", "finite", "metric_key",
    "build_parser", "run", "main",
]
