"""The results link, end to end: a real sweep, a real `mlflow server`, a real (headless) browser.

A fresh browser opening an experiment in the MLflow 3 UI lands on the GenAI "Overview" page;
the link of sweeps.ui_link must open the runs table instead, the trials ranked by val_acc with
their val_acc / test_acc / params columns shown. Needs Debian's `chromium`: skips without it,
unless CI=true (then it fails: .ci/run installs it).
"""
from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

from pg import MLFLOW_SERVER_ENV, Service, free_port
from sweep_helpers import mlflow_client, run_sweep, trial_runs
from sweeps.ui_link import (
    DEFAULT_METRICS,
    DEFAULT_PARAMS,
    LOCAL_UI,
    VIEW_TAG_PREFIX,
    column_key,
    results_link,
    runs_table_state,
    run_artifact_url,
    runs_table_url,
    save_runs_table_view,
    ui_base_for,
    view_id_for,
)

EXPERIMENT = "linear-sweeps-image_folder"
VAL = column_key("metrics", "val_acc")
# Fresh profile, nothing from the network but 127.0.0.1 (MLflow's UI is served by the server).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--window-size=1600,1000"]


# ---------------------------------------------------------------------------------------------
# The link (no browser)

def test_ui_base_for_a_tracking_server_is_its_own_address():
    assert ui_base_for("http://mlflow-host:5000") == ("http://mlflow-host:5000", None)
    assert ui_base_for("https://ml.example.org/mlflow/") == ("https://ml.example.org/mlflow", None)
    # Credentials stay out of a browser URL.
    assert ui_base_for("http://alice:s3cret@10.0.0.2:5000") == ("http://10.0.0.2:5000", None)


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:////abs/path/mlflow.db", "file:///tmp/mlruns",
                                 "mlruns", "postgresql+psycopg2://u@db:5432/mlflow"])
def test_ui_base_for_an_embedded_store_is_mlflow_ui_on_localhost(uri):
    base, command = ui_base_for(uri)
    assert base == LOCAL_UI == "http://127.0.0.1:5000"
    assert command == f"mlflow ui --backend-store-uri {uri}"


def test_ui_command_quotes_the_uri_and_hides_a_password():
    _, command = ui_base_for("sqlite:///my runs/mlflow.db")
    assert command == "mlflow ui --backend-store-uri 'sqlite:///my runs/mlflow.db'"
    _, command = ui_base_for("postgresql+psycopg2://bob:hunter2@db:5432/mlflow")
    assert "hunter2" not in command and "bob:***@db:5432" in command


def test_ui_base_for_refuses_what_has_no_local_ui():
    with pytest.raises(ValueError, match="no local MLflow UI"):
        ui_base_for("databricks")


def test_runs_table_url_without_a_view_sorts_in_the_model_training_view():
    url = runs_table_url("http://127.0.0.1:5000/", "12")
    assert url == ("http://127.0.0.1:5000/#/experiments/12/runs?workflowType=machine_learning&searchFilter="
                   "&orderByKey=metrics.%60val_acc%60&orderByAsc=false")
    assert runs_table_url("http://h:1", "3", order_by="params.`reg` ASC").endswith(
        "orderByKey=params.%60reg%60&orderByAsc=true")


def test_runs_table_url_with_a_view_carries_only_the_view_key():
    """The UI ignores a shared view when a search-facet parameter is also in the URL."""
    view = view_id_for(runs_table_state())
    url = runs_table_url("http://127.0.0.1:5000", "7", view_id=view)
    assert url == f"http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey={view}&workflowType=machine_learning"
    with pytest.raises(ValueError, match="not saved for these columns"):
        runs_table_url("http://127.0.0.1:5000", "7", metrics=("train_acc",), view_id=view)


def test_run_artifact_url_opens_the_artifact_on_the_run_page():
    assert run_artifact_url("http://127.0.0.1:5000", "3", "abc123", "templates.png") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc123/artifacts/templates.png?workflowType=machine_learning")


def test_view_state_names_the_columns_and_the_sort():
    state = runs_table_state()
    assert state["orderByKey"] == "metrics.`val_acc`" and state["orderByAsc"] is False
    assert state["selectedColumns"] == ["metrics.`val_acc`", "metrics.`test_acc`", "params.`learning_rate`",
                                        "params.`reg`", "params.`loss`"]
    assert state["columnOrder"][-5:] == state["selectedColumns"]
    assert view_id_for(state) == view_id_for(runs_table_state())  # stable: one view per column set
    assert view_id_for(state) != view_id_for(runs_table_state(metrics=("val_acc",)))


class FakeClient:
    """The two MlflowClient calls the view needs (the real client is used in the browser test)."""

    def __init__(self):
        self.tags: Dict[str, str] = {}
        self.writes = 0

    def get_experiment(self, experiment_id):
        return type("Experiment", (), {"tags": dict(self.tags)})()

    def set_experiment_tag(self, experiment_id, key, value):
        self.tags[key] = value
        self.writes += 1


def test_saved_view_is_an_experiment_tag_in_mlflows_envelope():
    import json

    client = FakeClient()
    view = save_runs_table_view(client, "5")
    envelope = json.loads(client.tags[VIEW_TAG_PREFIX + view])
    assert envelope["name"] == "val_acc ranking" and isinstance(envelope["createdAt"], int)
    assert json.loads(envelope["state"]) == runs_table_state()
    # Saving again writes nothing (same id, same createdAt); other columns are another view.
    assert save_runs_table_view(client, "5") == view and client.writes == 1
    other = save_runs_table_view(client, "5", metrics=("train_acc",), params=())
    assert other != view and json.loads(client.tags[VIEW_TAG_PREFIX + other])["name"] == "val_acc ranking"
    url, command = results_link("sqlite:///mlflow.db", "5", client=client)
    assert url == runs_table_url(LOCAL_UI, "5", view_id=view)
    assert command == "mlflow ui --backend-store-uri sqlite:///mlflow.db"


def test_results_link_without_edit_rights_still_opens_the_sorted_table(capsys):
    class ReadOnly:
        def get_experiment(self, experiment_id):
            raise PermissionError("403 PERMISSION_DENIED")

    url, command = results_link("http://mlflow-host:5000", "4", client=ReadOnly())
    assert command is None
    assert url == runs_table_url("http://mlflow-host:5000", "4")
    assert "default columns" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The browser

def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> str:
    path = chromium()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing in CI (.ci/run installs it: apt-get install -y chromium)")
        pytest.skip("needs Debian's chromium (apt-get install -y chromium) to render the MLflow UI")
    return path


def render(browser: str, url: str, profile: Path, *, dump_dom: bool = True, screenshot: Optional[Path] = None,
           budget_ms: int = 15000) -> str:
    """The page after ``budget_ms`` of virtual time in headless chromium with a fresh profile."""
    assert not profile.exists(), "each page load gets a fresh profile"
    args = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    args += ["--dump-dom"] if dump_dom else []
    args += [f"--screenshot={screenshot}"] if screenshot else []
    proc = subprocess.run([*args, url], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


class Grid(html.parser.HTMLParser):
    """The ag-grid cells of the dumped page: text by (row id, column id), row order, title."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.stack: List[Tuple[str, Optional[str], Optional[str]]] = []
        self.cells: Dict[Tuple[str, str], str] = {}
        self.row_index: Dict[str, int] = {}
        self.title = ""
        self.text: List[str] = []
        self._in_title = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        if a.get("row-id") and a.get("row-index", "").isdigit():
            self.row_index[a["row-id"]] = int(a["row-index"])
        if tag not in self.VOID:
            row = a.get("row-id") or (self.stack[-1][1] if self.stack else None)
            col = a.get("col-id") or (self.stack[-1][2] if self.stack else None)
            self.stack.append((tag, row, col))

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self.stack and self.stack[-1][0] in ("script", "style"):
            return
        self.text.append(data)
        if self.stack and self.stack[-1][1] and self.stack[-1][2] and data.strip():
            key = (self.stack[-1][1], self.stack[-1][2])
            self.cells[key] = self.cells.get(key, "") + data.strip()

    @property
    def page_text(self) -> str:
        return " ".join(t.strip() for t in self.text if t.strip())


def js_number(x: float) -> str:
    """How the runs table prints a metric: JavaScript's String(x) (1.0 -> "1")."""
    if x == int(x):
        return str(int(x))
    r = repr(x)
    if "e" in r and abs(x) >= 1e-6:  # JS keeps positional notation down to 1e-6
        r = format(Decimal(r), "f")
    return r


def test_js_number_matches_javascript():
    assert js_number(1.0) == "1" and js_number(0.0) == "0"
    assert js_number(17 / 18) == "0.9444444444444444"
    assert js_number(5e-05) == "0.00005"


SHARED_FIXTURES = ("served_sweep",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory):
    """A small real sweep (two studies, three trials each) behind a real `mlflow server`."""
    tmp = tmp_path_factory.mktemp("browse")
    work = tmp / "work"
    proc = run_sweep(work, "loss=svm,softmax", "hydra.sweeper.n_trials=3", "sweep=random")
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    service = Service("mlflow", argv, health_url=f"http://127.0.0.1:{port}/health", log_dir=tmp,
                      env=MLFLOW_SERVER_ENV, cwd=work).start(timeout=90)
    service.uri = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    service.sweep_stdout = proc.stdout  # type: ignore[attr-defined]
    yield service, work
    service.stop()


def test_link_opens_the_ranked_runs_table_not_the_genai_overview(browser, served_sweep, tmp_path):
    service, work = served_sweep
    client = mlflow_client(work)
    exp = client.get_experiment_by_name(EXPERIMENT)
    trials = {r.info.run_id: r for r in trial_runs(client)}
    assert len(trials) == 6 and all("val_acc" in r.data.metrics for r in trials.values())

    # The link the sweep printed (for its embedded store: after `mlflow ui`, on port 5000); the
    # server here serves that same store on a free port.
    printed = re.search(r"mlflow ui --backend-store-uri (\S+)\s+then open (\S+)", service.sweep_stdout)
    assert printed, service.sweep_stdout[-2000:]
    assert printed.group(2).startswith(f"{LOCAL_UI}/#/experiments/{exp.experiment_id}/runs?")
    results = yaml.safe_load((work / "multirun" / "optimization_results.yaml").read_text())
    assert {s["mlflow_url"] for s in results["studies"]} == {printed.group(2)}
    url = printed.group(2).replace(LOCAL_UI, service.uri)

    grid = None
    for attempt, budget in enumerate((15000, 30000)):  # a loaded machine may need more virtual time
        grid = Grid(render(browser, url, tmp_path / f"profile{attempt}", budget_ms=budget))
        if all((run_id, VAL) in grid.cells for run_id in trials):
            break
    text = grid.page_text
    # The runs table of this experiment, in the model-training view ...
    assert grid.title.startswith("Runs"), grid.title
    assert "Model training" in text and EXPERIMENT in text
    for word in ("No data available", "Token Usage", "Overview", "Detect Issues"):  # ... not the GenAI overview
        assert word not in text, f"{word!r} on the page: {text[:2000]}"
    assert "You're viewing a shared view" in text  # the saved view was found and applied
    # Every trial's val_acc as the UI prints it, its params too, and best first.
    for run_id, run in trials.items():
        assert grid.cells.get((run_id, VAL)) == js_number(run.data.metrics["val_acc"]), (run.info.run_name, text)
        for p in DEFAULT_PARAMS:
            assert grid.cells.get((run_id, column_key("params", p))) == run.data.params[p]
    best = [r.data.metrics.get("test_acc") for r in trials.values() if "test_acc" in r.data.metrics]
    assert sorted(grid.cells.get((i, column_key("metrics", "test_acc"))) for i in trials
                  if "test_acc" in trials[i].data.metrics) == sorted(js_number(b) for b in best)
    ranked = sorted(trials, key=lambda i: grid.row_index[i])
    shown = [trials[i].data.metrics["val_acc"] for i in ranked]
    assert shown == sorted(shown, reverse=True), shown
    assert all(m in text for m in DEFAULT_METRICS)

    # The same page as a newcomer sees it (LINEAR_SWEEPS_SCREENSHOT_DIR keeps a copy to look at).
    shot = tmp_path / "runs-table.png"
    render(browser, url, tmp_path / "profile-shot", dump_dom=False, screenshot=shot)
    assert shot.stat().st_size > 20_000
    if os.environ.get("LINEAR_SWEEPS_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["LINEAR_SWEEPS_SCREENSHOT_DIR"]) / shot.name)


def test_plain_experiment_link_is_what_the_runs_link_fixes(browser, served_sweep, tmp_path):
    """Without the link, a fresh browser shows the GenAI overview: the reason for sweeps.ui_link."""
    service, work = served_sweep
    exp = mlflow_client(work).get_experiment_by_name(EXPERIMENT)
    text = Grid(render(browser, f"{service.uri}/#/experiments/{exp.experiment_id}", tmp_path / "p")).page_text
    if "Overview" not in text:  # a later MLflow that opens training experiments on their runs
        pytest.skip("this MLflow opens the experiment on its runs already")
    assert "No data available" in text
