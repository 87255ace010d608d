"""The Optuna internals the engine relies on (sweeps/adapter/): a canary that names what
an Optuna release changed, and the adapter's functions checked against Optuna's own behaviour."""
import datetime
import re
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps import adapter
from sweeps.storage import Heartbeat


def test_canary_this_optuna_has_what_the_adapter_uses():
    problems = adapter.optuna_canary_problems() + adapter.trials_canary_problems()
    assert not problems, (f"Optuna {optuna.__version__} changed internals that sweeps/adapter/ uses: "
                          f"{problems}. Update the adapter (or pin optuna below this release in pyproject.toml).")


def test_batched_heartbeats_keep_trials_alive_in_optunas_own_stale_check(tmp_path):
    """One transaction beats many trials; Optuna's stale check must read them as its own beats."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    kept, dead = study.ask(), study.ask()
    beats = Heartbeat(storage, interval=1)  # not started: no background thread, beats on add()
    beats.add([adapter.trial_id(kept), adapter.trial_id(dead)])  # first beat: inserts both rows
    time.sleep(2.2)
    beats.add([adapter.trial_id(kept)])  # second beat: updates one row
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {kept.number: TrialState.RUNNING, dead.number: TrialState.FAIL}


def test_stale_trials_include_old_ones_that_never_beat(tmp_path):
    """A trial asked by a process that died before its first heartbeat (or by an older version)
    has no heartbeat row: Optuna never sees it as stale; the adapter does, once it is old enough."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    beating, silent = study.ask(), study.ask()
    Heartbeat(storage, interval=1).add([adapter.trial_id(beating)])
    assert adapter.stale_trial_ids(storage, study, grace_period=2) == []  # young: not stale yet
    old = datetime.datetime.now() - datetime.timedelta(seconds=60)
    storage.set_trial_state_values(adapter.trial_id(silent), state=TrialState.RUNNING)
    with storage.engine.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
                     {"t": old, "i": adapter.trial_id(silent)})
    assert adapter.stale_trial_ids(storage, study, grace_period=2) == [adapter.trial_id(silent)]
    assert adapter.study_id(study) == storage.get_study_id_from_name(study.study_name)


# Optuna's and MLflow's private names as they appear in code: attributes, module paths, methods.
PRIVATE_NAME = re.compile(r"(?<!self)\._(trial_id|study_id|storage|backend|cached_frozen_trial|tracking_client"
                          r"|get_stale_trial_ids|split_trials)\b|optuna\.(storages|samplers)\._"
                          r"|mlflow\.store\.|mlflow\.tracking\._")


def test_private_names_are_touched_in_one_module_only():
    repo = Path(__file__).resolve().parents[1]
    allowed = repo / "sweeps" / "adapter" / "private_names.py"
    found = {str(p.relative_to(repo)): sorted(set(m.group(0) for m in PRIVATE_NAME.finditer(p.read_text())))
             for pkg in ("sweeps", "linear_models", "hydra_plugins") for p in (repo / pkg).rglob("*.py")
             if p != allowed and PRIVATE_NAME.search(p.read_text())}
    assert not found, f"private names outside {allowed.name}: {found}"
    assert PRIVATE_NAME.search(allowed.read_text())  # the pattern still sees them where they are


def _ask_define_by_run(study: optuna.Study, n_asks: int, tell_every: int) -> list:
    """``n_asks`` trials asked with a conditional param; every ``tell_every``-th ask first tells the
    newest RUNNING trial, so the finished trials change between some asks and not others, and
    some RUNNING trials are older than some finished ones."""
    asked, running = [], []
    for i in range(n_asks):
        if i % tell_every == tell_every - 1 and running:
            done = running.pop()
            study.tell(done, done.params["lr"] * 100 + done.params["width"] / 10)
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("reg", 1e-6, 1e-1, log=True)
        trial.suggest_int("width", 1, 64, log=True)
        if trial.suggest_categorical("optimizer", ["sgd", "momentum", "adam"]) == "momentum":
            trial.suggest_float("momentum", 0.5, 0.99)  # not in every trial: sampled independently
        asked.append(trial.params)
        running.append(trial)
    return asked


def _finished_study(n_finished: int) -> optuna.Study:
    """A study of ``n_finished`` COMPLETE, PRUNED (with an intermediate value) and FAIL trials."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n_finished):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("reg", 1e-6, 1e-1, log=True)
        trial.suggest_int("width", 1, 64, log=True)
        if trial.suggest_categorical("optimizer", ["sgd", "momentum", "adam"]) == "momentum":
            trial.suggest_float("momentum", 0.5, 0.99)
        if i % 7 == 3:
            trial.report(0.1 * (i % 5), step=i % 3)
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 11 == 5:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, trial.params["lr"] * 100 - trial.params["reg"] * 10 + (i % 4) / 100)
    return study


@pytest.mark.parametrize("constant_liar", [True, False])
@pytest.mark.parametrize("n_finished", [3, 60])
def test_batch_tpe_draws_exactly_what_optunas_tpe_draws(constant_liar, n_finished):
    """The canary of adapter/optuna_tpe.py: the same params, ask for ask, as TPESampler's."""
    draws = {}
    for sampler_class in (optuna.samplers.TPESampler, adapter.BatchTPESampler):
        study = _finished_study(n_finished)
        study.sampler = sampler_class(seed=7, constant_liar=constant_liar, n_startup_trials=5)
        draws[sampler_class.__name__] = _ask_define_by_run(study, n_asks=40, tell_every=6)
    assert draws["BatchTPESampler"] == draws["TPESampler"], (
        f"Optuna {optuna.__version__}'s TPESampler draws differently from sweeps/adapter/optuna_tpe.py's "
        "BatchTPESampler: update it to this release's TPESampler._sample (or pin optuna below it).")
    assert len({round(p["lr"], 12) for p in draws["TPESampler"]}) > 30  # the asks did explore
