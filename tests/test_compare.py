"""linear-compare on a real (small) sweep: the table equals what MLflow holds, reseeds are logged
with their tags, figures are valid images, selection works and errors are clear (exit code 2)."""
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sweep_helpers import mlflow_client, run_sweep, trial_runs

from sweeps import compare
from sweeps.compare import CompareError, Selection

EXPERIMENT = "linear-sweeps-image_folder"
SVM, SOFTMAX = f"{EXPERIMENT}[loss=svm]", f"{EXPERIMENT}[loss=softmax]"
FIGURES = ("accuracy_map", "best_so_far", "loss_curves", "templates", "per_class", "reseeds")
RESEED = 2
# Every test that reads the sweep shares one ~25 s fixture (the sweep + one report): all are
# marked slow, so `-m "not slow"` runs the quick unit tests at the end only.
slow = pytest.mark.slow


SHARED_FIXTURES = ("sweep",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep, 4 trials per loss, in SQLite stores; shared by every test here."""
    workdir = tmp_path_factory.mktemp("compare") / "sweep"
    run_sweep(workdir, "loss=svm,softmax", "hydra.sweeper.n_trials=4")
    return workdir


@pytest.fixture(scope="module")
def uri(sweep):
    return f"sqlite:///{sweep / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(sweep):
    return mlflow_client(sweep)


@pytest.fixture(scope="module")
def report(sweep, uri):
    """linear-compare --reseed 2 with exports, run in-process once."""
    out = sweep.parent / "report"
    code = compare.main(["--tracking-uri", uri, "--experiment", EXPERIMENT, "--reseed", str(RESEED), "--top-k", "3",
                         "--out", str(out), "--csv", str(sweep.parent / "t.csv"),
                         "--parquet", str(sweep.parent / "t.parquet")])
    assert code == 0
    return out


def _comparison_runs(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'comparison'")


# ------------------------------------------------------------------ the table equals the runs
@slow
def test_summary_values_equal_the_mlflow_runs(client, uri, report):
    df, _ = compare.load_trials(compare.open_client(uri), Selection([EXPERIMENT]))
    summaries = {s.family: s for s in compare.summarize(df, ["loss"], top_k=3)}
    assert set(summaries) == {"svm", "softmax"}
    md = (report / "report.md").read_text()
    for loss, s in summaries.items():
        runs = trial_runs(client, EXPERIMENT, f"params.loss = '{loss}'")
        states = [r.data.tags["optuna.trial_state"] for r in runs]
        assert (s.trials, s.completed, s.pruned, s.failed) == (
            len(runs), states.count("COMPLETE"), states.count("PRUNED"), states.count("FAIL"))
        done = [r for r in runs if r.data.tags["optuna.trial_state"] == "COMPLETE"]
        best_val = max(r.data.metrics["val_acc"] for r in done)
        assert s.best_val_acc == best_val
        best = client.get_run(s.best["run_id"])
        assert best.data.metrics["val_acc"] == best_val
        assert s.best["learning_rate"] == float(best.data.params["learning_rate"])
        assert s.best["reg"] == float(best.data.params["reg"])
        # The sweep logs test_acc for each study's best trial: the report must pick that run.
        assert s.best["run_id"] == client.get_run(best.data.tags["mlflow.parentRunId"]).data.tags["best_run_id"]
        assert s.best["test_acc"] == best.data.metrics["test_acc"]
        assert s.median_seconds == pytest.approx(statistics.median(r.data.metrics["trial_seconds"] for r in runs))
        top = sorted((r.data.metrics["val_acc"] for r in done), reverse=True)[:3]
        assert list(s.top["val_acc"]) == top
        # The same numbers in the Markdown table row of this family.
        row = next(line for line in md.splitlines() if line.startswith(f"| {loss} | {len(runs)} |"))
        for text in (f"{best_val:.4f}", f"{s.best['learning_rate']:.2e}", f"{s.best['reg']:.2e}",
                     f"{best.data.metrics['test_acc']:.4f}"):
            assert text in row


@slow
def test_report_says_whether_each_best_config_is_inside_its_search_space(report):
    """The sweep logs its search space on the study run: the report checks the best lr / reg against it."""
    md = (report / "report.md").read_text()
    for loss in ("svm", "softmax"):
        (line,) = [x for x in md.splitlines() if x.startswith(f"- {loss}: ") and "search space" in x]
        assert "inside the search space" in line or re.search(r"at the (lower|upper) bound .* of the search space", line)


@slow
def test_dataframe_exports(sweep, report, client):
    n = len(trial_runs(client, EXPERIMENT))
    for frame in (pd.read_csv(sweep.parent / "t.csv"), pd.read_parquet(sweep.parent / "t.parquet"),
                  pd.read_csv(report / "trials.csv")):
        assert len(frame) == n
        assert {"run_id", "study", "trial", "state", "loss", "learning_rate", "reg", "val_acc",
                "trial_seconds"} <= set(frame.columns)
        assert set(frame["loss"]) == {"svm", "softmax"}


@slow
def test_test_accuracy_recomputed_from_weights_matches_the_logged_one(sweep, uri, client, tmp_path):
    """A best run without a test_acc metric gets it from weights.pt on its dataset."""
    df, _ = compare.load_trials(compare.open_client(uri), Selection([EXPERIMENT], [SVM]))
    logged = df.loc[df["test_acc"].notna()].iloc[0]
    summaries = compare.summarize(df.drop(columns="test_acc"), ["loss"])
    compare.fill_test_accuracy(summaries, compare.RunLoader(client, tmp_path))
    (s,) = summaries
    assert s.test_acc_source == "computed from the run's weights.pt"
    assert s.best["run_id"] == logged["run_id"]
    assert s.test_acc == pytest.approx(logged["test_acc"], abs=1e-6)


# ------------------------------------------------------------------ reseeding
@slow
def test_reseed_adds_s_runs_per_family_with_tags(client, report):
    (comparison,) = _comparison_runs(client)
    assert comparison.info.status == "FINISHED"
    exp = client.get_experiment_by_name(EXPERIMENT)
    reseeds = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'reseed'")
    assert len(reseeds) == 2 * RESEED
    df, _ = compare.load_trials(client, Selection([EXPERIMENT]))
    best = {s.family: s.best for s in compare.summarize(df)}
    for loss, b in best.items():
        mine = [r for r in reseeds if r.data.params["loss"] == loss]
        assert len(mine) == RESEED
        assert {r.data.tags["reseed.of_run"] for r in mine} == {b["run_id"]}
        assert sorted(int(r.data.tags["reseed.seed"]) for r in mine) == list(range(1, RESEED + 1))
        for r in mine:
            assert r.data.tags["mlflow.parentRunId"] == comparison.info.run_id
            assert r.info.status == "FINISHED"
            assert int(r.data.params["seed"]) == int(r.data.tags["reseed.seed"])
            for key in ("learning_rate", "reg", "num_iters", "batch_size", "device"):  # the best config, new seed
                assert r.data.params[key] == client.get_run(b["run_id"]).data.params[key]
            assert {"val_acc", "test_acc"} <= set(r.data.metrics)
    # The report's means are those of the logged runs.
    md = (report / "report.md").read_text()
    assert "This report shows reseeded means" in md
    assert "Welch" in md
    for loss in best:
        vals = [r.data.metrics["test_acc"] for r in reseeds if r.data.params["loss"] == loss]
        assert f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}" in md


@slow
def test_report_logged_as_artifacts_of_the_comparison_run(client, report):
    (comparison,) = _comparison_runs(client)
    assert comparison.data.tags["compare.shows"] == f"reseeded means ({RESEED} seeds)"
    names = {a.path for a in client.list_artifacts(comparison.info.run_id)}
    assert {"report.md", "report.html", "trials.csv", "reseeds.csv"} | {f"{f}.png" for f in FIGURES} <= names
    assert comparison.data.metrics["svm.best_val_acc"] > 0


# ------------------------------------------------------------------ figures
@slow
def test_figures_are_valid_images_and_embedded_in_the_html(report):
    for name in FIGURES:
        path = report / f"{name}.png"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 50
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert 'class="sortable"' in html and "<script>" in html
    assert "src=\"http" not in html  # self-contained
    md = (report / "report.md").read_text()
    for name in FIGURES:
        assert f"({name}.png)" in md


@slow
def test_single_best_runs_without_data_and_without_logging(sweep, uri, client, tmp_path):
    """--no-log writes nothing to MLflow; a missing dataset is reported, not a crash."""
    before = len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], ""))
    out = tmp_path / "rep"
    assert compare.main(["--tracking-uri", uri, "--experiment", EXPERIMENT, "--no-log", "--out", str(out),
                         "--data-root", str(tmp_path / "gone")]) == 0
    assert len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], "")) == before
    md = (out / "report.md").read_text()
    assert "This report shows single best runs" in md and "--reseed" in md
    assert "per-class accuracy of svm" in md and "could not be loaded" in md
    assert not (out / "per_class.png").exists()
    for name in ("accuracy_map", "best_so_far", "loss_curves", "templates"):  # from MLflow alone
        with Image.open(out / f"{name}.png") as img:
            img.verify()


# ------------------------------------------------------------------ selection
@slow
def test_select_by_study_and_sweep_name(uri):
    client = compare.open_client(uri)
    df, _ = compare.load_trials(client, Selection(studies=[SVM]))
    assert set(df["study"]) == {SVM} and set(df["loss"]) == {"svm"}
    both, _ = compare.load_trials(client, Selection(studies=[EXPERIMENT]))  # a sweep name: all its cells
    assert set(both["study"]) == {SVM, SOFTMAX}
    assert len(both) == 8


@slow
def test_select_by_tag_on_trial_or_study_run(uri):
    client = compare.open_client(uri)
    df, _ = compare.load_trials(client, Selection(tags={"sampler": "tpe"}))  # a tag of the parent study run
    assert len(df) == 8
    df, _ = compare.load_trials(client, Selection(tags={"optuna.trial_number": "0"}))  # a trial run's own tag
    assert sorted(df["study"]) == sorted([SVM, SOFTMAX]) and set(df["trial"]) == {0}
    with pytest.raises(CompareError, match="empty selection"):
        compare.load_trials(client, Selection(tags={"sampler": "grid"}))


@slow
def test_select_by_experiment(uri, client, tmp_path):
    """Another experiment in the same store is left out unless selected."""
    exp_id = client.create_experiment("other-sweeps", artifact_location=str(tmp_path / "art"))
    run = client.create_run(exp_id, tags={"linear_sweeps.role": "trial", "optuna.study_name": "other",
                                          "optuna.trial_state": "COMPLETE", "optuna.trial_number": "0"})
    client.log_param(run.info.run_id, "loss", "svm")
    client.log_metric(run.info.run_id, "val_acc", 0.25)
    client.set_terminated(run.info.run_id)
    try:
        c = compare.open_client(uri)
        only, _ = compare.load_trials(c, Selection(["other-sweeps"]))
        assert list(only["run_id"]) == [run.info.run_id] and list(only["experiment"]) == ["other-sweeps"]
        sweep_only, _ = compare.load_trials(c, Selection([EXPERIMENT]))
        assert run.info.run_id not in set(sweep_only["run_id"]) and len(sweep_only) == 8
        both, _ = compare.load_trials(c, Selection([EXPERIMENT, "other-sweeps"]))
        assert len(both) == 9
    finally:
        client.delete_experiment(exp_id)


# ------------------------------------------------------------------ errors: exit 2, a message, no traceback
@slow
@pytest.mark.parametrize("args, message", [
    (["--experiment", "no-such-experiment"], f"unknown experiment 'no-such-experiment'; experiments in this store: .*{EXPERIMENT}"),
    (["--study", "no-such-study"], r"empty selection: .*studies=\['no-such-study'\].*studies there: .*loss=svm\] \(4 trials\)"),
    (["--experiment", EXPERIMENT, "--tag", "sampler=grid"], r"empty selection: .*tags=\{sampler=grid\}"),
    (["--tag", "sampler"], "--tag must be KEY=VALUE"),
    (["--group-by", "colour"], "--group-by colour: not a param"),
    (["--reseed", "1"], "--reseed must be 0 or an integer >= 2"),
])
def test_clear_errors(uri, tmp_path, capsys, args, message):
    assert compare.main(["--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log"] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("linear-compare: error: ")
    assert "Traceback" not in err
    assert re.search(message, err), err


@slow
@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "cannot train here: device.type .*pass --device cpu"),
    (["--data-root", "/no/such/images"], "cannot train here: dataset.root .*pass --data-root PATH"),
])
def test_reseed_that_cannot_train_fails_before_logging_anything(uri, client, tmp_path, capsys, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = len(_comparison_runs(client))
    assert compare.main(["--tracking-uri", uri, "--experiment", EXPERIMENT, "--reseed", "2",
                         "--out", str(tmp_path / "r")] + args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert len(_comparison_runs(client)) == before


def test_missing_store_is_an_error_not_a_new_database(tmp_path, capsys):
    assert compare.main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "r")]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_usage_error_exit_code(capsys):
    assert compare.main(["--top-k", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err


# ------------------------------------------------------------------ pieces without MLflow
SPACE_TAG = ("{model.learning_rate: 'FloatDistribution(high=1.0, log=True, low=0.001, step=None)',\n"
             "  model.reg: 'FloatDistribution(high=0.01, log=True, low=1e-06, step=None)'}")  # as the sweep logs it


@pytest.mark.parametrize("text, expected", [
    (SPACE_TAG, {"learning_rate": (1e-3, 1.0), "reg": (1e-6, 1e-2)}),
    ("{model.learning_rate: 'tag(log, interval(1e-4, 1.0))', model.reg: 'choice(1e-5, 1e-4, 1e-3)', "
     "loss: 'choice(svm, softmax)', model.num_iters: 'range(100, 500, 100)', seed: '3'}",
     {"learning_rate": (1e-4, 1.0), "reg": (1e-5, 1e-3), "num_iters": (100, 400)}),
    ("{model.reg: 'CategoricalDistribution(choices=(0.1, 0.01))', loss: \"CategoricalDistribution(choices=('svm',))\"}",
     {"reg": (0.01, 0.1)}),
    ("not: [valid", {}), ("", {}), (None, {}),
])
def test_parse_search_space_tag(text, expected):
    assert compare.parse_search_space(text) == pytest.approx(expected)


def _edge_trials(lrs, regs, val):
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(len(lrs))], "loss": "svm", "study": "s", "trial": range(len(lrs)),
                         "state": "COMPLETE", "experiment": "e", "learning_rate": lrs, "reg": regs, "val_acc": val,
                         "start_time": pd.Timestamp(0), "duration_s": 1.0, "parent_run_id": "study-run"})


def test_best_config_at_the_edge_of_its_search_space_is_reported():
    df = _edge_trials([0.995, 0.1, 0.01, 0.002], [1e-4, 1e-3, 1e-5, 1e-6], [0.40, 0.35, 0.30, 0.20])
    best = df.iloc[0]
    check = compare.find_edges(best, df, compare.parse_search_space(SPACE_TAG))
    assert check.source == "search space" and check.checked == ["learning_rate", "reg"]
    (edge,) = check.edges  # 0.995 is within 1% of the upper bound 1.0; reg 1e-4 is inside
    assert (edge.param, edge.side, edge.bound, edge.value) == ("learning_rate", "upper", 1.0, 0.995)
    assert not compare.find_edges(df.iloc[1], df, compare.parse_search_space(SPACE_TAG)).edges
    # Without a search_space tag: the smallest / largest value tried in the family are the bounds.
    inside = compare.find_edges(df.iloc[2], df, None)
    assert inside.source == "values tried" and inside.checked == ["learning_rate", "reg"] and not inside.edges
    tried = compare.find_edges(df.iloc[3], df, None)
    assert [(e.param, e.side, e.bound) for e in tried.edges] == [("learning_rate", "lower", 0.002), ("reg", "lower", 1e-6)]
    assert [(e.param, e.side) for e in compare.find_edges(best, df, None).edges] == [("learning_rate", "upper")]
    assert not compare.find_edges(df.iloc[:2].iloc[0], df.iloc[:2], None).checked  # 2 values tried: no range


def test_report_has_one_search_space_line_per_family():
    from types import SimpleNamespace

    svm = _edge_trials([0.995, 0.1, 0.01], [1e-4, 1e-3, 1e-5], [0.40, 0.35, 0.30])
    softmax = _edge_trials([0.05, 0.1], [1e-4, 1e-3], [0.45, 0.35]).assign(loss="softmax", run_id=["s0", "s1"])
    df = pd.concat([svm, softmax], ignore_index=True)
    labels = compare.family_labels(df, ["loss"])
    summaries = compare.summarize(df, ["loss"], top_k=2)
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(tags={"search_space": SPACE_TAG})))
    compare.fill_edges(summaries, df, labels, client)
    md = compare.build_report(df, labels, summaries, selection=Selection(), uri="sqlite:///m.db", group_by=["loss"],
                              top_k=2, reseeds=None, figures={}, notes=[], comparison=None).markdown()
    assert ("- svm: **best learning_rate = 9.95e-01 is at the upper bound 1.00e+00 of the search space**: "
            "the optimum may lie beyond it, widen that range") in md.splitlines()
    assert "- softmax: best learning_rate and reg inside the search space (none within 1% of a bound)" in md.splitlines()
    compare.fill_edges(summaries, df, labels)  # no client: the values tried
    md = compare.build_report(df, labels, summaries, selection=Selection(), uri="sqlite:///m.db", group_by=["loss"],
                              top_k=2, reseeds=None, figures={}, notes=[], comparison=None).markdown()
    assert "- svm: **best learning_rate = 9.95e-01 is at the upper bound 9.95e-01 of the values tried" in md
    assert "- softmax: no range known for learning_rate or reg" in md


def test_html_report_renders_the_template_self_contained(tmp_path):
    """report.html comes from templates/report.html.j2: the table, the embedded PNG, escaping, the sort script."""
    import base64

    png = tmp_path / "fig.png"
    Image.new("RGB", (6, 4), "red").save(png)
    rep = compare.Report("svm vs <softmax>")
    rep.text("**bold** and `code` & <b>raw</b>")
    rep.bullets(["one", "two"])
    rep.table(["family", "val_acc"], [["svm", 0.25], ["<script>alert(1)</script>", 0.5]], sortable=True)
    rep.figure(png, "a **figure**")
    html = rep.html()
    assert html.startswith("<!DOCTYPE html>") and "<title>svm vs &lt;softmax&gt;</title>" in html
    assert '<table class="sortable"><thead><tr><th>family</th><th>val_acc</th></tr></thead>' in html
    assert "<tr><td>svm</td><td>0.25</td></tr>" in html
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html  # autoescaped
    assert "<p><b>bold</b> and <code>code</code> &amp; &lt;b&gt;raw&lt;/b&gt;</p>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in html
    assert "<figcaption>a <b>figure</b></figcaption>" in html
    assert html.count("<script>") == 1 and 'querySelectorAll("table.sortable th")' in html
    assert "http" not in html  # self-contained: nothing to fetch


def test_html_template_ships_as_package_data():
    import tomllib
    from pathlib import Path

    root = Path(compare.__file__).parents[2]
    conf = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "sweeps.compare" in conf["packages"]
    (pattern,) = conf["package-data"]["sweeps.compare"]
    assert [p.name for p in (root / "sweeps" / "compare").glob(pattern)] == ["report.html.j2"]


def test_summary_counts_states_and_retries():
    rows = [
        dict(state="COMPLETE", val_acc=0.30, trial=0, loss="svm", trial_seconds=1.0),
        dict(state="COMPLETE", val_acc=0.35, trial=1, loss="svm", trial_seconds=3.0),
        dict(state="PRUNED", val_acc=0.10, trial=2, loss="svm", trial_seconds=2.0),
        dict(state="FAIL", val_acc=math.nan, trial=3, loss="svm", trial_seconds=math.nan),  # retried as trial 5
        dict(state="FAIL", val_acc=math.nan, trial=4, loss="svm", trial_seconds=math.nan),
        dict(state="COMPLETE", val_acc=0.33, trial=5, loss="svm", trial_seconds=2.5, retry_of="3"),
        dict(state="RUNNING", val_acc=math.nan, trial=6, loss="svm", trial_seconds=math.nan),
        dict(state="COMPLETE", val_acc=0.40, trial=0, loss="softmax", trial_seconds=4.0),
    ]
    df = pd.DataFrame([{**r, "run_id": f"r{i}", "study": f"s-{r['loss']}", "experiment": "e",
                        "start_time": pd.Timestamp(i, unit="s"), "duration_s": 1.0,
                        "retry_of": r.get("retry_of")} for i, r in enumerate(rows)])
    svm, = [s for s in compare.summarize(df, ["loss"], top_k=2) if s.family == "svm"]
    assert (svm.trials, svm.completed, svm.pruned, svm.failed, svm.retried, svm.running) == (7, 3, 1, 1, 1, 1)
    assert svm.best["run_id"] == "r1" and list(svm.top["val_acc"]) == [0.35, 0.33]
    assert svm.median_seconds == 2.25
    multi = compare.summarize(df.assign(lr_decay="none"), ["loss", "lr_decay"])
    assert [s.family for s in multi] == ["loss=softmax, lr_decay=none", "loss=svm, lr_decay=none"]


@pytest.mark.parametrize("df, q, expected", [(1, 0.975, 12.7062), (2, 0.975, 4.3027), (4, 0.975, 2.7764),
                                             (9, 0.975, 2.2622), (30, 0.975, 2.0423), (1000, 0.975, 1.9623),
                                             (5, 0.95, 2.0150), (3.5, 0.975, 2.9401)])
def test_t_quantiles_match_the_t_table(df, q, expected):
    assert compare.t_quantile(q, df) == pytest.approx(expected, abs=2e-4)


def test_welch_test_and_interval():
    a, b = [0.40, 0.41, 0.39, 0.42, 0.40], [0.36, 0.37, 0.35, 0.36, 0.38]
    ca, cb = compare.mean_ci(a), compare.mean_ci(b)
    half = 2.7764 * np.std(a, ddof=1) / math.sqrt(5)
    assert (ca.low, ca.high) == pytest.approx((np.mean(a) - half, np.mean(a) + half), abs=1e-4)
    w = compare.welch_test(ca, cb)
    assert w.diff == pytest.approx(0.04)
    stats = pytest.importorskip("scipy.stats")
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic, rel=1e-9) and w.p == pytest.approx(ref.pvalue, rel=1e-6)
    assert compare.welch_test(compare.mean_ci([0.5]), cb) is None  # one value: no test
    same = compare.welch_test(compare.mean_ci([0.5, 0.5]), compare.mean_ci([0.5, 0.5]))
    assert same.p == 1.0


# The numbers the hand-written incomplete beta / bisection / Welch code gave before scipy.stats
# replaced it: the scipy-backed functions must keep them.
@pytest.mark.parametrize("t, df, expected", [(2.7764, 4, 0.050002307717401745), (2.0423, 30, 0.04999710237393895),
                                             (1.0, 1, 0.5), (0.0, 5, 1.0), (12.7062, 1, 0.050000018560710395),
                                             (-3.0, 2.5, 0.0725760955490318), (math.inf, 3, 0.0)])
def test_t_two_sided_p_keeps_the_pinned_values(t, df, expected):
    assert compare.t_two_sided_p(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("a, b, expected", [
    ([0.40, 0.41, 0.39, 0.42, 0.40], [0.36, 0.37, 0.35, 0.36, 0.38], (5.547001962252298, 8.0, 0.0005428796940208152)),
    ([0.5, 0.5, 0.5], [0.40, 0.42, 0.41], (15.58845726811993, 2.0, 0.004089996689521349)),  # one side without noise
    ([0.5, 0.5], [0.4, 0.4], (math.inf, math.inf, 0.0)),  # no noise at all: the gap is certain
])
def test_welch_test_keeps_the_pinned_values(a, b, expected):
    w = compare.welch_test(compare.mean_ci(a), compare.mean_ci(b))
    assert (w.t, w.df, w.p) == pytest.approx(expected, rel=1e-9)


def test_mean_ci_keeps_the_pinned_interval():
    ci = compare.mean_ci([0.40, 0.41, 0.39, 0.42, 0.40])
    assert (ci.low, ci.high) == pytest.approx((0.38984285223017734, 0.4181571477698227), rel=1e-12)
