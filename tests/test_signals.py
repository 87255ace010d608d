"""Signals mid-sweep: SIGINT, SIGTERM and SIGHUP take one path (exit 128 + signum, within
hydra.sweeper.shutdown_timeout), leave nothing RUNNING in Optuna or MLflow, and the relaunch of
the same command (without the test's slow-down) resumes the study to exactly n_trials.

Also: a double Ctrl-C, a signal while a batch is being recorded, and a seeded campaign of
launches each stopped at a random moment (SIGKILL, SIGTERM, SIGINT, double SIGINT)."""
import os
import random
import signal
import time

import pytest
from optuna.trial import TrialState

from engine_checks import (EXIT, FAST, Sweep, assert_invariant, assert_nothing_running, describe, marker_env,
                           new_workdir, open_trials_with_runs, trials_with_runs)
from sweep_helpers import REPO, dataset, load_study, mlflow_client, run_sweep, slow_env, trial_runs

pytestmark = pytest.mark.slow

STUDY = "linear-sweeps-image_folder"
N = 4
SHUTDOWN = 5
ARGS = [*FAST, f"hydra.sweeper.n_trials={N}", "hydra.sweeper.batch_size=2",
        f"hydra.sweeper.shutdown_timeout={SHUTDOWN}"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One image tree and data cache for the module (each test has its own stores)."""
    root = tmp_path_factory.mktemp("signals")
    dataset(root)
    return root


def interrupted(sweep: Sweep, *signums: int, gap: float = 0.03, bound: float = SHUTDOWN,
                hammer: bool = False) -> int:
    """Send ``signums`` (``gap`` s apart), and with ``hammer`` the last one again every 50 ms
    until the process ends; the exit code, checked to come within the shutdown bound."""
    for i, s in enumerate(signums):
        if i:
            time.sleep(gap)
        sweep.send(s)
    while hammer and sweep.proc.poll() is None and time.monotonic() - sweep.signalled_at < bound + 8:
        time.sleep(0.05)
        try:
            sweep.proc.send_signal(signums[-1])
        except ProcessLookupError:
            break
    code = sweep.wait(timeout=bound + 60)
    took = time.monotonic() - sweep.signalled_at
    # The watchdog ends cleanup after ``bound`` s; what follows is the interpreter's exit.
    assert took < bound + 8, f"{took:.1f} s from the signal to the exit:\n{sweep.log()}"
    return code


def check_interrupted(work, code, signum, log, before=()):
    """After a stop by ``signum``: its exit code, nothing RUNNING, the trials it interrupted FAIL
    "interrupted" and re-queued (WAITING, same params) unless re-runs already (max_retries=1).
    ``before``: the numbers of the trials that were FAIL before this launch."""
    name = signal.Signals(signum).name
    assert code == EXIT[signum], f"exit {code}, not {EXIT[signum]}:\n{log}"
    assert "Traceback" not in log, log
    assert_nothing_running(work, f"after {name}:")
    study = load_study(work, STUDY)
    killed = [t for t in study.trials if t.state == TrialState.FAIL and t.number not in before]
    assert killed and all(t.user_attrs["fail_reason"] == "interrupted" for t in killed), f"{name}: {describe(study)}"
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    first_tries = [t for t in killed if "failed_trial" not in t.system_attrs]
    assert sorted(str(t.params) for t in waiting) == sorted(str(t.params) for t in first_tries), describe(study)
    return killed


def test_each_signal_during_training(base):
    """SIGINT, then SIGTERM, then SIGHUP, each stopping a launch of the same command while a
    batch trains (each launch resumes the last one's study: re-queued trials are interrupted
    again); then the relaunch without the slow-down ends the study."""
    work = new_workdir(base, "signals")
    killed = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        before = [t.number for t in load_study(work, STUDY).trials if t.state == TrialState.FAIL] if killed else []
        sweep = Sweep(work, *ARGS, env=slow_env(train=3.0), tag=signum.name)
        try:
            sweep.wait_for(lambda: open_trials_with_runs(work) >= 2, f"a batch training with its runs ({signum.name})")
            time.sleep(0.5)
            code = interrupted(sweep, signum)
        finally:
            sweep.kill()
        killed += check_interrupted(work, code, signum, sweep.log(), before)
    run_sweep(work, *ARGS)
    study = assert_invariant(work, STUDY, N)
    # Each interrupted trial re-run once, with its params (max_retries=1); later, new trials.
    retries = {t.system_attrs["failed_trial"]: t for t in study.trials if "failed_trial" in t.system_attrs}
    for t in killed:
        if "failed_trial" not in t.system_attrs:
            assert retries[t.number].params == t.params, describe(study)


def test_double_ctrl_c(base):
    work = new_workdir(base, "double")
    sweep = Sweep(work, *ARGS, env=slow_env(train=3.0))
    try:
        sweep.wait_for(lambda: open_trials_with_runs(work) >= 2, "a batch training with its runs")
        time.sleep(0.5)
        # Two Ctrl-C 30 ms apart, then more every 50 ms until the process has ended (someone
        # holding the key down): the same exit, and no traceback, whatever moment they hit.
        code = interrupted(sweep, signal.SIGINT, signal.SIGINT, hammer=True)
    finally:
        sweep.kill()
    check_interrupted(work, code, signal.SIGINT, sweep.log())
    run_sweep(work, *ARGS)
    first = assert_invariant(work, STUDY, N, "first relaunch:")
    run_sweep(work, *ARGS)  # a finished study stays exactly at n_trials: nothing asked, nothing lost
    second = assert_invariant(work, STUDY, N, "second relaunch:")
    assert len(second.trials) == len(first.trials)


def test_a_signal_while_runs_are_created_leaves_one_run_per_trial(base):
    """SIGINT while the finisher writes a batch's MLflow runs (slowed to 3 s): the stop waits for
    those runs and ends them, instead of creating a second, bare run for each trial."""
    work = new_workdir(base, "creating")
    marker = work.parent / "creating-marker"
    env = {**slow_env(), "LINEAR_SWEEPS_TEST_SLOW_CREATE": "3", "LINEAR_SWEEPS_TEST_CREATE_MARKER": str(marker)}
    sweep = Sweep(work, *ARGS, env=env)
    try:
        sweep.wait_for(marker.exists, "a batch's runs being created")
        time.sleep(0.3)
        code = interrupted(sweep, signal.SIGINT)
    finally:
        sweep.kill()
    check_interrupted(work, code, signal.SIGINT, sweep.log())
    client = mlflow_client(work)
    for t in load_study(work, STUDY).trials:
        if t.state == TrialState.FAIL:
            runs = trial_runs(client, extra=f"tags.`optuna.trial_id` = '{t._trial_id}'")
            assert [r.info.run_id for r in runs] == [t.user_attrs["mlflow_run_id"]], (t.number, runs)
    run_sweep(work, *ARGS)
    assert_invariant(work, STUDY, N)


@pytest.mark.parametrize("record,timeout", [(3.0, 10), (16.0, 6)], ids=["in-flight-at-deadline", "outlasts-timeout"])
def test_signal_while_a_batch_is_recorded(base, record, timeout):
    """Each trial's recording takes ``record`` s. The stop waits for them until half the
    shutdown timeout, aborts the trials still open; a recording under way then either ends
    later (its metrics and final-state tags must not turn the aborted trial's run back into
    COMPLETE) or outlasts the timeout (the process still ends within it)."""
    work = new_workdir(base, f"record{record:g}")
    hook = base / f"record{record:g}-hook"
    args = [*FAST, f"hydra.sweeper.n_trials={N}", "hydra.sweeper.batch_size=2",
            f"hydra.sweeper.shutdown_timeout={timeout}"]
    sweep = Sweep(work, *args, env=marker_env(hook, record=record))
    try:
        sweep.wait_for(lambda: (hook / "recording").exists(), "a trial being recorded")
        time.sleep(0.5)
        code = interrupted(sweep, signal.SIGTERM, bound=timeout)
    finally:
        sweep.kill()
    assert code == 143, sweep.log()
    assert_nothing_running(work, "after SIGTERM while recording:")
    if record < timeout:  # (the other case's relaunch is the same as this one's)
        run_sweep(work, *args)
        assert_invariant(work, STUDY, N)


def test_signal_while_a_study_is_opened(base):
    """Opening a study creates (or reopens) its parent run before its session exists; a signal
    then is held until the session exists, so the stop ends that parent run too."""
    work = new_workdir(base, "opening")
    hook = base / "opening-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time\n"
        "import sweeps.engine.study_session as ss\n"
        "_init = ss.StudySession.__init__\n"
        "def init(self, *args, **kwargs):\n"
        f"    open({str(hook / 'opening')!r}, 'w').close()\n"
        "    time.sleep(2)\n"
        "    return _init(self, *args, **kwargs)\n"
        "ss.StudySession.__init__ = init\n")
    sweep = Sweep(work, *ARGS, env={"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"})
    try:
        sweep.wait_for(lambda: (hook / "opening").exists(), "a study being opened")
        time.sleep(0.5)
        code = interrupted(sweep, signal.SIGINT)
    finally:
        sweep.kill()
    assert code == 130, sweep.log()
    assert_nothing_running(work, "after SIGINT while opening:")
    parent = mlflow_client(work).get_run(load_study(work, STUDY).user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"


CAMPAIGN_SEED = int(os.environ.get("LINEAR_SWEEPS_CAMPAIGN_SEED", "20240917"))
# Six launches of the default seed stop by each of the four ways, from the start and mid-trial.
CAMPAIGN_LAUNCHES = int(os.environ.get("LINEAR_SWEEPS_CAMPAIGN_LAUNCHES", "6"))
STOPS = ("SIGKILL", "SIGTERM", "SIGINT", "double SIGINT")
# What each way of stopping may exit with: the sweep's own code, or (signalled before the sweeper
# installed its handlers, while Python starts) the default action of the signal.
ALLOWED = {"SIGKILL": {-9}, "SIGTERM": {143, -15}, "SIGINT": {130, -2, 1}, "double SIGINT": {130, -2, 1}}


def test_randomized_stop_campaign(base):
    """Launches of one sweep, each stopped at a random moment; then one to completion.
    LINEAR_SWEEPS_CAMPAIGN_SEED=<seed> replays (or varies) the campaign and
    LINEAR_SWEEPS_CAMPAIGN_LAUNCHES=<n> lengthens it."""
    rng = random.Random(CAMPAIGN_SEED)
    work = new_workdir(base, "campaign")
    n = 3 * CAMPAIGN_LAUNCHES  # enough work that most launches are stopped before the study ends
    args = [*FAST, f"hydra.sweeper.n_trials={n}", "hydra.sweeper.batch_size=2",
            f"hydra.sweeper.shutdown_timeout={SHUTDOWN}"]
    history = []
    for i in range(CAMPAIGN_LAUNCHES):
        how = rng.choice(STOPS)
        anchor = rng.choice(("start", "trial"))  # from the launch's start, or once a trial runs
        # From the start: often while Python and the sweeper start up (about 5 s), or opening.
        delay = rng.uniform(0.0, 3.0) if anchor == "trial" else rng.uniform(3.0, 10.0)
        linked = trials_with_runs(work)
        sweep = Sweep(work, *args, env=slow_env(train=0.5, record=0.1), tag=f"launch{i}")
        try:
            if anchor == "trial":  # this launch's first trial run (a killed launch's may be RUNNING still)
                deadline = time.monotonic() + 60
                while sweep.proc.poll() is None and trials_with_runs(work) == linked and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(delay)
            if sweep.proc.poll() is None:
                if how == "SIGKILL":
                    sweep.send(signal.SIGKILL)
                elif how == "SIGTERM":
                    sweep.send(signal.SIGTERM)
                else:
                    sweep.send(signal.SIGINT)
                    if how == "double SIGINT":
                        time.sleep(0.03)
                        sweep.send(signal.SIGINT)
            code = sweep.wait(timeout=SHUTDOWN + 60)
        finally:
            sweep.kill()
        history.append(f"{i}: {how} {delay:.2f} s after {anchor} -> exit {code}")
        msg = f"campaign seed {CAMPAIGN_SEED} ({'; '.join(history)}):"
        assert code in ALLOWED[how] | {0}, f"{msg}\n{sweep.log()}"
        if code in (130, 143):
            assert "Traceback" not in sweep.log(), f"{msg}\n{sweep.log()}"
    msg = f"campaign seed {CAMPAIGN_SEED} ({'; '.join(history)}):"
    print(msg)
    proc = run_sweep(work, *args, check=False)
    assert proc.returncode == 0, f"{msg}\n{proc.stderr[-4000:]}"
    assert_invariant(work, STUDY, n, msg)
