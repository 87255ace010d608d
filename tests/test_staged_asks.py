"""Staged asks (sweeps/staged_asks.py, adapter.insert_trials): a batch asked in memory and
written at once must leave the study exactly as Optuna's own ``study.ask`` loop does, for every
sampler the engine offers, on SQLite, PostgreSQL and in memory."""
import datetime

import optuna
import pytest
from optuna.trial import TrialState

from pg import pg_server, pg_url  # noqa: F401  (fixtures)
from sweeps import adapter
from sweeps.staged_asks import ask_staged
from sweeps.study import RESEEDED_SAMPLERS, make_sampler, trial_seed

SPACE = {"model.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
         "model.reg": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True),
         "model.batch_size": optuna.distributions.CategoricalDistribution([100, 200])}
GRID_SPACE = {"model.learning_rate": optuna.distributions.CategoricalDistribution([1e-3, 1e-2, 1e-1]),
              "model.reg": optuna.distributions.CategoricalDistribution([0.0, 0.5, 1.0, 2.0])}
KWARGS = {"tpe": {"n_startup_trials": 3}, "cmaes": {"n_startup_trials": 3}}
SAMPLERS = ["random", "tpe", "grid", "qmc", "cmaes"]


def test_canary_this_optuna_has_what_staged_asks_use():
    problems = adapter.optuna_canary_problems() + adapter.trials_canary_problems()
    assert not problems, f"Optuna {optuna.__version__} changed what adapter.insert_trials/bind_trial use: {problems}"


def _study(storage, sampler: str):
    space = GRID_SPACE if sampler == "grid" else SPACE
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=make_sampler(sampler, 7, space, KWARGS.get(sampler, {})))
    for i in range(4):  # a history: TPE and CMA-ES sample from it, grid and QMC move past it
        trial = _ask_one(study, sampler, space, len(study.trials))
        study.tell(trial, 0.1 * i)
    return study, space


def _ask_one(study, sampler: str, space, number: int):
    if sampler in RESEEDED_SAMPLERS:  # as the engine does
        study.sampler = make_sampler(sampler, trial_seed(7, number), space, KWARGS.get(sampler, {}))
    trial = study.ask(fixed_distributions=space)
    trial.set_user_attr("asked_as", number)
    return trial


def _state(study):
    trials = study.get_trials()
    return ([(t.number, t.state, t.params, t.distributions, t.system_attrs, t.user_attrs, t.value) for t in trials],
            adapter.storage_of(study).get_study_system_attrs(adapter.study_id(study)))


def _both_ways(make_storage, sampler: str, k: int = 5):
    ways = {}
    for how in ("study.ask", "staged"):
        study, space = _study(make_storage(how), sampler)
        if how == "study.ask":
            batch = [_ask_one(study, sampler, space, len(study.trials)) for _ in range(k)]
        else:
            batch = ask_staged(study, study.get_trials(deepcopy=False), k,
                               lambda staged, number: _ask_one(staged, sampler, space, number))
        ways[how] = (study, batch, _state(study))
    return ways


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_staged_asks_write_what_study_ask_writes_on_sqlite(sampler, tmp_path):
    ways = _both_ways(lambda how: optuna.storages.RDBStorage(f"sqlite:///{tmp_path / how}.db"), sampler)
    assert ways["staged"][2] == ways["study.ask"][2]
    _check_bound_trials_work(*ways["staged"][:2])


@pytest.mark.parametrize("sampler", ["random", "grid", "qmc"])
def test_staged_asks_write_what_study_ask_writes_on_postgres(sampler, pg_url):
    storages = {how: optuna.storages.RDBStorage(pg_url) for how in ("study.ask", "staged")}
    ways = {}
    for how in storages:  # one database: the two studies side by side, numbered per study
        ways[how] = _both_ways(lambda _: storages[how], sampler)[how]
    assert ways["staged"][2] == ways["study.ask"][2]
    _check_bound_trials_work(*ways["staged"][:2])


def test_staged_asks_in_memory_go_through_the_public_calls():
    ways = _both_ways(lambda how: optuna.storages.InMemoryStorage(), "qmc")
    assert ways["staged"][2] == ways["study.ask"][2]
    _check_bound_trials_work(*ways["staged"][:2])


def _check_bound_trials_work(study, batch):
    assert [t.number for t in batch] == list(range(4, 4 + len(batch)))
    now = datetime.datetime.now()
    for t in study.get_trials()[4:]:  # stored as UTC, read back as local time
        assert t.state == TrialState.RUNNING and abs((t.datetime_start - now).total_seconds()) < 60
    batch[0].report(0.5, step=10)
    batch[0].set_user_attr("mlflow_run_id", "abc")
    assert batch[0].should_prune() is False
    study.tell(batch[0], 0.9)
    study.tell(batch[1], state=TrialState.FAIL)
    first = study.get_trials()[4]
    assert (first.state, first.value, first.intermediate_values, first.user_attrs["mlflow_run_id"]) == (
        TrialState.COMPLETE, 0.9, {10: 0.5}, "abc")
    assert study.ask().number == 4 + len(batch)  # numbering goes on after the batch


def test_a_failed_staged_ask_writes_nothing(tmp_path):
    study, space = _study(optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"), "random")

    def ask_one(staged, number):
        if number == 6:
            raise RuntimeError("sampler broke")
        return _ask_one(staged, "random", space, number)

    with pytest.raises(RuntimeError, match="sampler broke"):
        ask_staged(study, study.get_trials(deepcopy=False), 4, ask_one)
    assert len(study.get_trials()) == 4


def test_staged_asks_refuse_incompatible_distributions(tmp_path):
    study, space = _study(optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"), "random")
    other = {"model.reg": optuna.distributions.IntDistribution(0, 3)}
    with pytest.raises(ValueError, match="different distribution kind"):
        ask_staged(study, study.get_trials(deepcopy=False), 1, lambda staged, n: staged.ask(other))
    assert len(study.get_trials()) == 4


# ----------------------------------------------------------------------------------- bulk tells
def _tells_both_ways(make_storage, sampler="random"):
    states = {}
    for how in ("study.tell", "tell_trials"):
        study, space = _study(make_storage(how), sampler)
        batch = [_ask_one(study, sampler, space, len(study.trials)) for _ in range(6)]
        batch[5].report(0.25, step=10)
        tells = [(batch[0], TrialState.COMPLETE, 0.5), (batch[1], TrialState.FAIL, None),
                 (batch[2], TrialState.COMPLETE, float("nan")), (batch[3], TrialState.COMPLETE, 1),
                 (batch[5], TrialState.PRUNED, None)]
        study.tell(batch[4], 0.1)  # finished already: telling it again is an error, the rest are told
        tells.insert(2, (batch[4], TrialState.COMPLETE, 0.7))
        if how == "study.tell":
            errors = adapter.optuna_tells._tell_one_by_one(study, tells)
        else:
            errors = adapter.tell_trials(study, tells)
        assert list(errors) == [adapter.trial_id(batch[4])]
        now = datetime.datetime.now()
        for t in study.get_trials()[4:]:
            assert abs((t.datetime_complete - now).total_seconds()) < 60
        states[how] = [(t.number, t.state, t.values, t.intermediate_values, t.params) for t in study.get_trials()]
    assert states["tell_trials"] == states["study.tell"]
    return states["tell_trials"]


def test_bulk_tells_write_what_study_tell_writes_on_sqlite(tmp_path):
    told = _tells_both_ways(lambda how: optuna.storages.RDBStorage(f"sqlite:///{tmp_path / how}.db"))
    assert [s for _, s, *_ in told[4:]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL,  # nan: FAIL
                                            TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert told[4][2] == [0.5] and told[7][2] == [1.0] and told[9][2] == [0.25]  # PRUNED: its last report


def test_bulk_tells_write_what_study_tell_writes_on_postgres(pg_url):
    storage = optuna.storages.RDBStorage(pg_url)
    _tells_both_ways(lambda how: storage, "tpe")


def test_bulk_tells_in_memory_go_through_study_tell():
    _tells_both_ways(lambda how: optuna.storages.InMemoryStorage())


def test_qmc_sampler_that_keeps_its_space_draws_what_optunas_draws():
    """FirstSpaceQMCSampler (sweeps/study.py) skips Optuna's per-ask scan for the first trial."""
    from sweeps.study import FirstSpaceQMCSampler

    draws = {}
    for cls in (optuna.samplers.QMCSampler, FirstSpaceQMCSampler):
        study = optuna.create_study(sampler=cls(seed=3, warn_asynchronous_seeding=False))
        first = study.ask(SPACE)  # finishes late: the space may not be kept before it does
        for i in range(12):
            trial = study.ask(SPACE)
            study.tell(trial, state=TrialState.FAIL) if i == 2 else study.tell(trial, 0.1 * i)
            if i == 5:
                study.tell(first, 0.9)
        draws[cls] = [t.params for t in study.get_trials()]
    assert draws[FirstSpaceQMCSampler] == draws[optuna.samplers.QMCSampler]
