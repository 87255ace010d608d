"""An exception injected at each named point of a trial's life (sweeps/engine/faults.py):
faults on the main thread end the launch, leaving nothing RUNNING in Optuna or MLflow, and a
relaunch without the fault reaches exactly n_trials with both stores agreeing; those on the
recording thread cost a re-run of the trial and the launch itself ends the study that way.

Also the repair of what an older version of the engine left in a study."""
import os

import pytest

from engine_checks import FAST, assert_invariant, assert_nothing_running, new_workdir
from sweep_helpers import REPO, dataset, run_sweep
from sweeps.engine.faults import POINTS

pytestmark = pytest.mark.slow

STUDY = "linear-sweeps-image_folder"
N = 4
ARGS = [*FAST, f"hydra.sweeper.n_trials={N}", "hydra.sweeper.batch_size=2"]
# Where each fault hits (the n-th pass of its point): in the second batch, once the first one is
# told, so the fault finds both told and open trials. ask:4 is the second ask of that batch
# (one trial of it asked already); tell_write:2 fails the second batch's one write of its tells
# (both its trials are re-run); finalize has one pass.
WHEN = {"ask": 4, "create_run": 3, "train": 2, "record": 3, "tell": 3, "tell_write": 2, "close_run": 3,
        "finalize": 1}
MAIN_THREAD = {"ask", "train", "finalize"}  # the launch stops (finalize: its summary fails)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    dataset(root)
    return root


def test_every_point_is_covered():
    assert set(WHEN) == set(POINTS)


@pytest.mark.parametrize("point", POINTS)
def test_fault_at(base, point):
    work = new_workdir(base, point)
    fault = f"{point}:{WHEN[point]}"
    proc = run_sweep(work, *ARGS, check=False, env={"LINEAR_SWEEPS_FAULT": fault})
    out = proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "InjectedFault" in out, out
    if point not in MAIN_THREAD:
        # The launch goes on: the trial is re-run (or, once told, only its run's end retried), and
        # the launch itself ends the study as promised (a relaunch would find nothing to do).
        assert proc.returncode == 0, out
        assert_invariant(work, STUDY, N, f"after the fault {fault}:")
        return
    assert proc.returncode != 0, out
    assert_nothing_running(work, f"after the fault {fault}:")
    run_sweep(work, *ARGS)
    assert_invariant(work, STUDY, N, f"relaunch after the fault {fault}:")


def test_repairs_what_an_older_version_left(base):
    """An older version left a FAIL trial with reason "interrupted" and no re-queued copy, a
    RUNNING trial with a RUNNING run and no heartbeat row (its worker died mid-training), and a
    RUNNING trial without a run or heartbeat (died between ask and run): the relaunch fails the
    RUNNING ones as stale, re-runs them, replaces the uncounted FAIL, and ends at n_trials."""
    from optuna.trial import TrialState

    from sweep_helpers import load_study, mlflow_client

    work = new_workdir(base, "legacy")
    run_sweep(work, *ARGS[:-2], "hydra.sweeper.n_trials=3", "hydra.sweeper.batch_size=2")
    study = load_study(work, STUDY)
    space = study.trials[0].distributions
    client = mlflow_client(work)
    exp = client.get_experiment_by_name("linear-sweeps-image_folder").experiment_id
    parent_id = study.user_attrs["mlflow_parent_run_id"]

    def legacy_run(trial, state):
        run = client.create_run(exp, run_name=f"svm-{trial.number:03d} legacy", tags={
            "linear_sweeps.role": "trial", "optuna.study_name": STUDY, "mlflow.parentRunId": parent_id,
            "optuna.trial_number": str(trial.number), "optuna.trial_id": str(trial._trial_id),
            "optuna.trial_state": state})
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        return run.info.run_id

    interrupted = study.ask(space)
    run_id = legacy_run(interrupted, "FAIL")
    interrupted.set_user_attr("fail_reason", "interrupted")
    study.tell(interrupted, state=TrialState.FAIL)
    client.set_terminated(run_id, "KILLED")
    died_training = study.ask(space)
    legacy_run(died_training, "RUNNING")
    study.ask(space)  # died before its run existed
    assert [t.state for t in load_study(work, STUDY).trials].count(TrialState.RUNNING) == 2

    run_sweep(work, *ARGS[:-2], "hydra.sweeper.n_trials=5", "hydra.sweeper.batch_size=2", timeout=180)
    study = assert_invariant(work, STUDY, 5, "after the legacy repair:")
    stale = [t for t in study.trials if t.user_attrs.get("fail_reason") == "worker died (no heartbeat)"]
    assert sorted(t.number for t in stale) == [4, 5], [(t.number, t.state.name) for t in study.trials]
    complete = [t.params for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(t.params in complete for t in stale)  # re-run with their params


def test_own_trials_told_while_the_storage_is_read_are_not_another_workers(base, tmp_path):
    """The engine reads the RUNNING trials, then asks the ledger which are its own; a tell landing
    in between left a trial that was ours counted as another worker's (a poll-interval sleep and
    'waiting for trials of other workers' at the end of every single-worker sweep)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time\n"
        "import sweeps.engine.study_session as ss\n"
        "_read = ss.running_trials\n"
        "def running_trials(study):\n"
        "    trials = _read(study)\n"
        "    time.sleep(1.0)  # the finisher tells meanwhile: the snapshot goes stale\n"
        "    return trials\n"
        "ss.running_trials = running_trials\n")
    work = new_workdir(base, "stale-snapshot")
    proc = run_sweep(work, *FAST, "hydra.sweeper.n_trials=4", "hydra.sweeper.batch_size=4",
                     "hydra.sweeper.heartbeat_interval=10", "hydra.sweeper.grace_period=30",
                     "hydra.sweeper.sampler=random", env={"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"})
    assert "of other workers" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert_invariant(work, STUDY, 4)
