"""The MLflow internals the engine relies on (sweeps/adapter/): a canary that names what
an MLflow release changed, and runs written in bulk checked against the same runs written
through MLflow's public client, on SQLite and on PostgreSQL."""
import contextlib
import math
import sqlite3

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pg import pg_server, pg_url  # noqa: F401  (fixtures)
from sweeps import adapter, new_mlflow_store
from sweeps.tracking import Tracker

SERIES = {"train_loss": ([0, 10, 20], [2.3, 1.9, float("nan")]), "val_acc": ([10, 20], [0.31, 0.35]),
          "test_acc": ([20], [float("inf")]), "trials_in_batch": ([20], [4])}
TAGS = {"optuna.trial_state": "COMPLETE", "linear_sweeps.role": "trial"}


def test_canary_this_mlflow_has_what_the_adapter_uses():
    problems = adapter.mlflow_canary_problems()
    assert not problems, (f"MLflow {mlflow.__version__} changed internals that sweeps/adapter/ uses: "
                          f"{problems}. Update the adapter (or pin mlflow below this release in pyproject.toml).")


def _write_both_ways(tracker: Tracker):
    """Two runs through the public client, two in bulk, with the same content; returns the ids."""
    public = [tracker.create_run(f"trial-{i}", {"k": "v", "n": i, "skipped": None}, {"lr": 0.1 * i, "loss": "svm"})
              for i in range(2)]
    bulk = tracker.create_runs([(f"trial-{i}", {"k": "v", "n": i, "skipped": None}, {"lr": 0.1 * i, "loss": "svm"})
                                for i in range(2)])
    for run_id in public:
        tracker.log_series(run_id, SERIES, tags=TAGS)
        tracker.log_series(run_id, {"val_acc": ([30, 5], [0.2, 0.9])}, tags={"optuna.trial_state": "PRUNED"})
    tracker.log_records([(run_id, SERIES, TAGS) for run_id in bulk])
    tracker.log_records([(run_id, {"val_acc": ([30, 5], [0.2, 0.9])}, {"optuna.trial_state": "PRUNED"})
                         for run_id in bulk])
    for run_id, status in zip(public, ("FINISHED", "KILLED")):
        tracker.end_run(run_id, status)
    tracker.end_runs(dict(zip(bulk, ("FINISHED", "KILLED"))))
    return public, bulk


def _view(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    info = run.info
    history = {key: sorted((m.step, m.value if not math.isnan(m.value) else "nan")
                           for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    return {"name": info.run_name, "status": info.status, "user": info.user_id, "stage": info.lifecycle_stage,
            "artifact_uri": info.artifact_uri.replace(run_id, "<id>"), "ended": info.end_time is not None,
            "started": info.start_time is not None, "experiment": info.experiment_id,
            "params": run.data.params, "tags": run.data.tags,
            "metrics": {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()},
            "history": history}


def _check_equal(tracker: Tracker) -> None:
    public, bulk = _write_both_ways(tracker)
    client = tracker.client
    for a, b in zip(public, bulk):
        assert _view(client, a) == _view(client, b)
    view = _view(client, bulk[0])
    assert view["metrics"]["val_acc"] == 0.2  # the latest is the highest step, not the last logged
    assert view["tags"]["mlflow.runName"] == "trial-0" and "skipped" not in view["tags"]
    assert view["tags"]["optuna.trial_state"] == "PRUNED"  # a tag logged again replaces the old one
    # What the UI and linear-compare query: filters on tags, params and metrics, ordering by a metric.
    found = tracker.search("tags.k = 'v' and params.loss = 'svm' and metrics.val_acc > 0.1")
    assert sorted(r.info.run_id for r in found) == sorted(public + bulk)
    ranked = client.search_runs([tracker.experiment_id], "attributes.status = 'FINISHED'",
                                order_by=["metrics.val_acc DESC"])
    assert sorted(r.info.run_id for r in ranked) == sorted([public[0], bulk[0]])
    with tracker.artifact_folder(bulk[1]) as folder:  # the artifact location works as for any run
        (folder / "note.txt").write_text("x")
    assert [f.path for f in client.list_artifacts(bulk[1])] == ["note.txt"]


def test_bulk_writes_equal_the_public_client_on_sqlite(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "adapter", str(tmp_path / "artifacts"))
    assert tracker._sql_store() is not None  # the bulk path is the one under test
    _check_equal(tracker)


def test_bulk_writes_equal_the_public_client_on_postgres(pg_url, tmp_path):
    tracker = Tracker(pg_url, "adapter", str(tmp_path / "artifacts"))
    assert tracker._sql_store() is not None
    _check_equal(tracker)


def test_what_a_bulk_write_refuses_is_written_one_at_a_time_and_fails_alone(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "adapter", str(tmp_path / "artifacts"))
    # Tags longer than MLflow's columns: SQLite would store them, PostgreSQL would not.
    with pytest.raises(mlflow.exceptions.MlflowException, match="'kkkk.*longer than MLflow stores"):
        adapter.create_runs(tracker._sql_store(), tracker.experiment_id, tracker.artifact_root,
                                   [adapter.NewRun("too long", {"k" * 300: "v"})], 0)
    assert tracker.search("") == []
    (run_id,) = tracker.create_runs([("ok", {"k": "v"}, None)])
    with pytest.raises(mlflow.exceptions.MlflowException, match="do not exist"):
        adapter.log_records(tracker._sql_store(), [adapter.RunRecord("0" * 32, [], {"a": "b"})])
    records = [(run_id, {"val_acc": ([1], [0.5])}, {"a": "b"}), ("0" * 32, {"val_acc": ([2], [0.6])}, None)]
    first, second = tracker.log_records(records)  # the bulk write fails; one at a time, one fails
    assert first is None and isinstance(second, mlflow.exceptions.MlflowException)
    assert tracker.get_run(run_id).data.metrics == {"val_acc": 0.5}


def _check_reopen(tracker: Tracker, missing_db_url: str) -> None:
    """adapter.reopen_run against MlflowClient.update_run(status="RUNNING") on two twin runs."""
    client = tracker.client
    twins = [tracker.create_run("study", {"linear_sweeps.role": "study"}, {"n_trials": 4}) for _ in range(2)]
    tracker.end_runs({run_id: "KILLED" for run_id in twins})
    client.update_run(twins[0], status="RUNNING")
    assert adapter.reopen_run(tracker.uri, twins[1]) == "reopened"
    assert _view(client, twins[0]) == _view(client, twins[1])
    assert client.get_run(twins[1]).info.status == "RUNNING"
    assert adapter.reopen_run(tracker.uri, "0" * 32) == "missing"
    client.delete_run(twins[1])
    assert adapter.reopen_run(tracker.uri, twins[1]) == "deleted"
    assert adapter.reopen_run(missing_db_url, twins[0]) == "missing"


def test_reopening_a_run_equals_the_public_client_on_sqlite(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "adapter", str(tmp_path / "artifacts"))
    missing = tmp_path / "gone.db"
    _check_reopen(tracker, f"sqlite:///{missing}")
    assert not missing.exists()  # looking for a run creates no database


def test_reopening_a_run_equals_the_public_client_on_postgres(pg_url, tmp_path):
    _check_reopen(Tracker(pg_url, "adapter", str(tmp_path / "artifacts")), f"sqlite:///{tmp_path}/gone.db")


def test_a_tracker_imports_mlflow_on_its_first_call_only():
    import subprocess
    import sys

    code = ("import sys, tempfile; from sweeps.tracking import Tracker; import sweeps.engine.loop\n"
            "t = Tracker('sqlite:///' + tempfile.mkdtemp() + '/m.db', 'e')\n"
            "assert 'mlflow' not in sys.modules, 'imported early'\n"
            "t.experiment_id; assert 'mlflow' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _tables(db) -> tuple:
    """(schema, rows by table) of a SQLite file: every table, index and trigger, every row."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        schema = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                     "WHERE name NOT LIKE 'sqlite_%'").fetchall())
        rows = {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
                for (kind, name, _, _) in schema if kind == "table"}
    return schema, rows


def test_a_store_copied_from_the_template_equals_a_store_mlflow_migrated(tmp_path, monkeypatch):
    """The canary of new_mlflow_store.py: same tables, indexes, schema version and rows (the
    Default experiment under the opening folder's own artifact root), and it takes runs."""
    monkeypatch.setenv("LINEAR_SWEEPS_CACHE", str(tmp_path / "cache"))
    for name in ("migrated", "copied"):
        (tmp_path / name).mkdir()
    # Two URIs: MLflow keeps one store per URI in a process.
    uri = {name: f"sqlite:///{tmp_path}/{name}/mlflow.db" for name in ("migrated", "copied")}
    monkeypatch.chdir(tmp_path / "migrated")  # the Default experiment's root: ./mlruns
    new_mlflow_store.mlflow_client(uri["migrated"])  # the first new store: migrated, kept as the template
    assert new_mlflow_store.template_path().is_file()
    monkeypatch.chdir(tmp_path / "copied")
    path = new_mlflow_store.new_sqlite_file(uri["copied"])
    assert path is not None and new_mlflow_store.seed_from_template(path)
    client = MlflowClient(uri["copied"])
    (default,) = client.search_experiments()
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.artifact_location == str(tmp_path / "copied" / "mlruns" / "0")

    (migrated_schema, migrated_rows), (copied_schema, copied_rows) = (
        _tables(tmp_path / name / "mlflow.db") for name in ("migrated", "copied"))
    assert copied_schema == migrated_schema
    for rows in (migrated_rows, copied_rows):  # id, name, location (own folder), stage, times, workspace
        rows["experiments"] = [(e[0], e[1], e[2].replace(str(tmp_path), ""), e[3], e[6]) for e in rows["experiments"]]
    migrated_rows["experiments"] = [e[:2] + (e[2].replace("/migrated/", "/copied/"),) + e[3:]
                                    for e in migrated_rows["experiments"]]
    assert copied_rows == migrated_rows

    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "val_acc", 0.4)
    assert client.get_run(run.info.run_id).data.metrics == {"val_acc": 0.4}


def test_a_store_that_holds_more_than_a_new_one_does_not_become_the_template(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEAR_SWEEPS_CACHE", str(tmp_path / "cache"))
    MlflowClient(f"sqlite:///{tmp_path}/used.db").create_experiment("someone else's")
    new_mlflow_store.keep_as_template(tmp_path / "used.db")
    assert not new_mlflow_store.template_path().exists()
    assert not new_mlflow_store.seed_from_template(tmp_path / "new.db") and not (tmp_path / "new.db").exists()
    assert new_mlflow_store.new_sqlite_file(f"sqlite:///{tmp_path}/used.db") is None  # there already
    assert new_mlflow_store.new_sqlite_file(f"sqlite:///{tmp_path}/no-such-folder/new.db") is None
    assert new_mlflow_store.new_sqlite_file("http://127.0.0.1:5000") is None


def test_a_broken_template_leaves_the_new_store_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEAR_SWEEPS_CACHE", str(tmp_path / "cache"))
    new_mlflow_store.template_path().parent.mkdir(parents=True)
    new_mlflow_store.template_path().write_bytes(b"not a database")
    client = new_mlflow_store.mlflow_client(f"sqlite:///{tmp_path}/mlflow.db")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no copy left behind
