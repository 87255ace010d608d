"""End-to-end sweeps with the real `python -m sweeps --multirun`, SQLite MLflow and Optuna stores."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from optuna.trial import TrialState

from sweep_helpers import HOOKS, REPO, load_study, mlflow_client, run_sweep, trial_runs

pytestmark = pytest.mark.slow

EXPERIMENT = "linear-sweeps-image_folder"
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def assert_states_agree(study, client):
    """Every trial has exactly one run, linked both ways, in the agreeing state."""
    runs = {r.info.run_id: r for r in trial_runs(client, extra=f"tags.`optuna.study_name` = '{study.study_name}'")}
    assert len(runs) == len(study.trials)
    for t in study.trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["optuna.trial_id"] == str(t._trial_id)
        assert run.data.tags["optuna.trial_state"] == t.state.name
        reason = t.user_attrs.get("fail_reason") or ""
        expected = "KILLED" if t.state == TrialState.FAIL and not reason.startswith(("diverged", "error")) else STATUS[t.state.name]
        assert run.info.status == expected, (t.number, t.state, reason)
    return runs


SHARED_FIXTURES = ("two_loss_sweep",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def two_loss_sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("sweep") / "work"
    proc = run_sweep(work, "loss=svm,softmax", "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=2")
    return work, proc


def test_multirun_records_studies_trials_metrics_artifacts(two_loss_sweep):
    work, proc = two_loss_sweep
    client = mlflow_client(work)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'study'")
    assert sorted(r.data.tags["optuna.study_name"] for r in parents) == [
        f"{EXPERIMENT}[loss=softmax]", f"{EXPERIMENT}[loss=svm]"]
    for parent in parents:
        name = parent.data.tags["optuna.study_name"]
        loss = name.split("loss=")[1].rstrip("]")
        assert parent.info.status == "FINISHED"
        study = load_study(work, name)
        assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
        assert study.metric_names == ["val_acc"]  # optuna-dashboard names the objective
        assert parent.info.run_name.startswith(f"{loss} · ")  # collapsed parent rows differ by family
        assert parent.data.tags["linear_sweeps.results_url"].startswith("http://127.0.0.1:5000/#/experiments/")
        runs = assert_states_agree(study, client)
        assert parent.data.metrics["best_val_acc"] == pytest.approx(study.best_value)
        parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"accuracy_map.png", "trials.csv", "optimization_history.png"} <= parent_artifacts
        with_test = []
        for run in runs.values():
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.tags["optuna.study_name"] == name
            assert "hydra.overrides" in run.data.tags and f"loss={loss}" in run.data.tags["hydra.overrides"]
            p = run.data.params
            assert p["loss"] == loss and p["num_iters"] == "60" and p["batch_size"] == "16"
            for key in ("learning_rate", "reg", "dtype", "device", "dataset", "seed", "init_scale"):
                assert key in p
            m = run.data.metrics
            assert 0 <= m["train_acc"] <= 1 and 0 <= m["val_acc"] <= 1 and m["trial_seconds"] > 0
            assert m["trials_in_batch"] == 4  # each round: both studies' batches of 2 in one stack
            curve = client.get_metric_history(run.info.run_id, "train_loss")
            assert [x.step for x in curve] == list(range(0, 60, 20)) + [59]
            val_curve = client.get_metric_history(run.info.run_id, "val_acc")
            assert [x.step for x in val_curve] == [20, 40, 60]
            trial = study.trials[int(run.data.tags["optuna.trial_number"])]
            assert trial.value == pytest.approx(m["val_acc"])
            assert trial.intermediate_values == {} or set(trial.intermediate_values) <= {20, 40}
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"templates.png", "config.yaml", "weights.pt"} <= artifacts
            # tracking.diagnostic_plots=best (the default): loss curve and confusion for the best only
            is_best = trial.number == study.best_trial.number
            assert ({"loss_curve.png", "confusion_val.png"} <= artifacts) == is_best
            assert is_best or not {"loss_curve.png", "confusion_val.png"} & artifacts
            if "test_acc" in m:
                with_test.append(run)
        # Selection by validation accuracy: only the best trial of each study gets a test accuracy.
        assert len(with_test) == 1
        assert with_test[0].info.run_id == study.best_trial.user_attrs["mlflow_run_id"]
        assert with_test[0].data.tags["test_acc_of"].startswith("best trial")


def test_optimization_results_yaml(two_loss_sweep):
    work, _ = two_loss_sweep
    (results,) = list((work / "multirun").glob("optimization_results.yaml"))
    data = yaml.safe_load(results.read_text())
    assert data["metric"] == "val_acc" and data["direction"] == "maximize"
    assert len(data["studies"]) == 2
    for s in data["studies"]:
        study = load_study(work, s["study_name"])
        assert s["best_val_acc"] == pytest.approx(study.best_value)
        assert s["best_params"] == study.best_params
        assert s["trials"]["COMPLETE"] == 4
        assert 0 <= s["best_test_acc"] <= 1


def test_artifact_images_are_valid(two_loss_sweep, tmp_path):
    from PIL import Image

    work, _ = two_loss_sweep
    client = mlflow_client(work)
    study = load_study(work, f"{EXPERIMENT}[loss=svm]")
    run_id = study.best_trial.user_attrs["mlflow_run_id"]
    for name in ("templates.png", "loss_curve.png", "confusion_val.png"):
        path = client.download_artifacts(run_id, name, str(tmp_path))
        with Image.open(path) as img:
            img.verify()


def test_resume_runs_only_missing_trials(tmp_path):
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.n_trials=3", "hydra.sweeper.batch_size=1")
    run_sweep(work, "hydra.sweeper.n_trials=5", "hydra.sweeper.batch_size=1")
    study = load_study(work, EXPERIMENT)
    assert len(study.trials) == 5
    assert sorted(t.number for t in study.trials) == list(range(5))
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 5
    assert_states_agree(study, mlflow_client(work))
    # Rerunning a finished study runs nothing new.
    run_sweep(work, "hydra.sweeper.n_trials=5")
    assert len(load_study(work, EXPERIMENT).trials) == 5


def test_a_relaunch_trains_before_mlflow_has_loaded(tmp_path):
    """On existing stores MLflow is not on the path to the first training step: its import ends
    after the first batch started training (it runs on the finisher meanwhile)."""
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.n_trials=2", "hydra.sweeper.batch_size=2")
    log = tmp_path / "mlflow-import.txt"
    env = {"PYTHONPATH": f"{HOOKS}{os.pathsep}{REPO}", "LINEAR_SWEEPS_TEST_IMPORT_LOG": str(log)}
    run_sweep(work, "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=2", env=env)
    (study,) = yaml.safe_load((work / "multirun" / "optimization_results.yaml").read_text())["studies"]
    import_started, import_ended = map(float, log.read_text().split())
    assert study["this_launch"]["trials_run"] == 2
    assert import_ended > study["this_launch"]["first_train_at"] > 0
    assert_states_agree(load_study(work, EXPERIMENT), mlflow_client(work))


def test_study_whose_tracking_store_was_deleted_is_refused_clearly(tmp_path):
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.n_trials=2")
    for f in work.glob("mlflow.db*"):
        f.unlink()  # the Optuna study stays, its MLflow runs are gone
    proc = run_sweep(work, "hydra.sweeper.n_trials=4", check=False)
    assert proc.returncode != 0
    assert "the two stores are out of sync" in proc.stderr and "hydra.sweeper.study_name" in proc.stderr, proc.stderr[-3000:]
    assert len(load_study(work, EXPERIMENT).trials) == 2  # nothing asked, nothing lost
    client = mlflow_client(work)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # no run created


def test_divergent_trial_fails_and_sweep_goes_on(tmp_path):
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=2",
              "model.learning_rate=choice(0.01,1e6)", "model.reg=choice(1.0)",
              "hydra.sweeper.max_failure_rate=1.0", "tracking.diagnostic_plots=all")
    study = load_study(work, EXPERIMENT)
    states = {t.params["model.learning_rate"]: t for t in study.trials}
    assert states[0.01].state == TrialState.COMPLETE
    bad = states[1e6]
    assert bad.state == TrialState.FAIL
    assert bad.user_attrs["fail_reason"].startswith("diverged: loss is")
    client = mlflow_client(work)
    runs = assert_states_agree(study, client)
    assert runs[bad.user_attrs["mlflow_run_id"]].data.tags["failure_reason"].startswith("diverged")
    # diagnostic_plots=all: every trial's loss curve; a diverged one has no weights to score
    artifacts = {t.params["model.learning_rate"]: {a.path for a in client.list_artifacts(t.user_attrs["mlflow_run_id"])}
                 for t in study.trials}
    assert {"loss_curve.png", "confusion_val.png", "templates.png", "weights.pt"} <= artifacts[0.01]
    assert "loss_curve.png" in artifacts[1e6]
    assert not {"confusion_val.png", "templates.png", "weights.pt"} & artifacts[1e6]


def test_studies_train_side_by_side_and_one_failing_stops_the_other_cleanly(tmp_path):
    # Two studies (an outer grid); every trial of the second diverges (huge initial weights).
    # Round 1 trains both batches together; at round 2 the second study is over its failure
    # rate: the first has asked its next batch already, which is marked FAIL/KILLED and
    # re-queued, and the next launch finishes it. No run is left RUNNING.
    work = tmp_path / "work"
    grid = ["hydra.sweeper.sampler=tpe", "hydra.sweeper.n_trials=10", "hydra.sweeper.batch_size=5",
            "model.init_scale=1e-6,1e30"]
    proc = run_sweep(work, *grid, check=False)
    assert proc.returncode != 0
    good, bad = (load_study(work, f"{EXPERIMENT}[model.init_scale={v}]") for v in ("1e-06", "1e+30"))
    assert f"5 of 5 trials failed in study {bad.study_name}" in proc.stderr
    states = [t.state for t in good.trials]
    assert states.count(TrialState.COMPLETE) == 5 and states.count(TrialState.FAIL) == 5
    assert all(t.user_attrs["fail_reason"] == "interrupted" for t in good.trials if t.state == TrialState.FAIL)
    assert [t.state for t in bad.trials] == [TrialState.FAIL] * 5
    client = mlflow_client(work)
    assert not trial_runs(client, extra="attributes.status = 'RUNNING'")
    parents = {r.data.tags["optuna.study_name"]: r.info.status for r in client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`linear_sweeps.role` = 'study'")}
    assert parents == {good.study_name: "KILLED", bad.study_name: "FAILED"}
    run_sweep(work, *grid, check=False)  # the same launch again: the first study finishes
    good = load_study(work, good.study_name)
    assert sum(t.state == TrialState.COMPLETE for t in good.trials) == 10
    assert not trial_runs(client, extra="attributes.status = 'RUNNING'")


def test_batched_and_sequential_sweeps_agree(tmp_path):
    common = ["hydra.sweeper.sampler=grid", "model.learning_rate=choice(0.001,0.01,0.1)",
              "model.reg=choice(0.0001,0.01)", "model.dtype=float64"]
    run_sweep(tmp_path / "seq", *common, "hydra.sweeper.batch_size=1")
    run_sweep(tmp_path / "bat", *common, "hydra.sweeper.batch_size=6")
    values = []
    for name in ("seq", "bat"):
        study = load_study(tmp_path / name, EXPERIMENT)
        assert len(study.trials) == 6
        values.append({tuple(sorted(t.params.items())): t.value for t in study.trials})
    assert values[0].keys() == values[1].keys()
    for key in values[0]:
        assert values[0][key] == pytest.approx(values[1][key], abs=1e-12)
    best = [max(v, key=v.get) for v in values]
    assert best[0] == best[1]


def test_pruned_trials_agree_in_both_stores(tmp_path):
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=8", "hydra.sweeper.batch_size=1",
              "hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_kwargs.n_startup_trials=1",
              "+hydra.sweeper.pruner_kwargs.n_warmup_steps=0",
              "model.learning_rate=tag(log, interval(1e-9, 1e-1))", "eval_every=10")
    study = load_study(work, EXPERIMENT)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state) for t in study.trials]
    runs = assert_states_agree(study, mlflow_client(work))
    for t in pruned:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.metrics["iterations"] < 60
        assert t.intermediate_values


def test_single_run_records_one_finished_run(tmp_path):
    work = tmp_path / "work"
    proc = run_sweep(work, "loss=softmax", multirun=False)
    assert "softmax: train_acc=" in proc.stdout
    client = mlflow_client(work)
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["linear_sweeps.role"] == "single"
    assert {"train_acc", "val_acc", "test_acc", "train_loss"} <= set(run.data.metrics)


@pytest.mark.parametrize("overrides,message", [
    (["model.learning_rate=-0.1"], "model.learning_rate must be > 0, got -0.1"),
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
    (["model.learning_rate=interval(-1.0, 1.0)"],
     "search space model.learning_rate allows an invalid value: model.learning_rate must be > 0, got -1.0"),
    (["model.learnin_rate=interval(0.1, 1.0)"], "model.learnin_rate is not a key of model (did you mean model.learning_rate?)"),
    (["hydra.sweeper.sampler=annealing"], "hydra.sweeper.sampler must be one of"),
    (["device=tpu"], "device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
])
def test_bad_config_is_rejected_before_any_run(tmp_path, overrides, message):
    work = tmp_path / "work"
    proc = run_sweep(work, *overrides, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert_no_runs(work)


def test_bad_single_run_value_creates_no_run(tmp_path):
    work = tmp_path / "work"
    proc = run_sweep(work, "model.reg=-1", multirun=False, check=False)
    assert proc.returncode != 0 and "model.reg must be >= 0, got -1" in proc.stderr
    assert_no_runs(work)


def assert_no_runs(work):
    if (work / "mlflow.db").exists():
        client = mlflow_client(work)
        exp = client.get_experiment_by_name(EXPERIMENT)
        assert exp is None or not client.search_runs([exp.experiment_id])


def test_ctrl_c_kills_open_runs_and_next_launch_resumes(tmp_path):
    work = tmp_path / "work"
    run_sweep(work, "hydra.sweeper.n_trials=1")  # warm the data cache and create the stores
    from sweep_helpers import slow_env, start_sweep

    # Slowed check points (not a longer training: the relaunch must find the same study).
    proc = start_sweep(work, "hydra.sweeper.n_trials=3", "hydra.sweeper.batch_size=1", env=slow_env(train=5.0))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            study = load_study(work, EXPERIMENT)
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("mlflow_run_id") for t in study.trials):
                break
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    study = load_study(work, EXPERIMENT)
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["fail_reason"] == "interrupted"
    assert any(t.state == TrialState.WAITING for t in study.trials)  # re-queued with the same params
    client = mlflow_client(work)
    assert client.get_run(killed[0].user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert not trial_runs(client, extra="attributes.status = 'RUNNING'")
    run_sweep(work, "hydra.sweeper.n_trials=3")
    study = load_study(work, EXPERIMENT)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert killed[0].params in [t.params for t in complete]
    assert_states_agree(study, client)


def test_trial_whose_run_cannot_be_created_is_rerun(tmp_path):
    """Trial runs are created in the background while the batch trains, all of a batch in one
    write, and one at a time if that write fails: a trial whose run cannot be created is not
    told COMPLETE without its results in MLflow; it is failed and re-run, the others go on."""
    work = tmp_path / "work"
    hook = tmp_path / "hook"
    hook.mkdir()
    # sitecustomize runs at the sweep process's start-up: every bulk write of runs fails, and so
    # does the one-at-a-time creation of the first trial's run.
    (hook / "sitecustomize.py").write_text(
        "from mlflow.exceptions import MlflowException\n"
        "import sweeps.tracking as tracking\n"
        "def bulk(*args, **kwargs):\n"
        "    raise MlflowException('injected: no bulk writes')\n"
        "tracking.adapter.create_runs = bulk\n"
        "original = tracking.Tracker.create_run\n"
        "failed = []\n"
        "def create_run(self, name, tags, params=None):\n"
        "    if tags.get('linear_sweeps.role') == 'trial' and 'optuna.trial_state' in tags and not failed:\n"
        "        failed.append(name)\n"
        "        raise MlflowException('injected: cannot create run')\n"
        "    return original(self, name, tags, params)\n"
        "tracking.Tracker.create_run = create_run\n")
    from sweep_helpers import REPO

    run_sweep(work, "hydra.sweeper.n_trials=3", "hydra.sweeper.batch_size=3", "hydra.sweeper.grace_period=2",
              env={"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"})
    study = load_study(work, EXPERIMENT)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["fail_reason"].startswith("tracking: could not record trial")
    assert failed.params in [t.params for t in study.trials if t.state == TrialState.COMPLETE]  # re-run
    runs = assert_states_agree(study, mlflow_client(work))
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert "val_acc" in runs[t.user_attrs["mlflow_run_id"]].data.metrics


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_against_a_real_mlflow_server(tmp_path):
    import urllib.request

    port = _free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}", "--artifacts-destination",
         str(server_dir / "artifacts"), "--workers", "1"],
        cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow server did not start")
                time.sleep(0.5)
        work = tmp_path / "work"
        uri = f"http://127.0.0.1:{port}"
        run_sweep(work, "hydra.sweeper.n_trials=2", f"tracking.uri={uri}", env={"MLFLOW_TRACKING_URI": uri})
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        runs = trial_runs(client)
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
        assert "templates.png" in artifacts
        assert not (work / "mlflow.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    work = tmp_path / "work"
    proc = run_sweep(work, "dataset=cifar10", f"dataset.root={tmp_path / 'nothing'}", "dataset.download=false",
                     multirun=False, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "linear-sweep:" in proc.stderr and "cifar-10" in proc.stderr.lower()
    assert_no_runs(work)
