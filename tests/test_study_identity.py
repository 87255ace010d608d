"""Study identity: a launch joins the study of its objective (the config without tracking,
device and cache, plus the search space, sampler and direction). Under the default name another
objective gets its own study ``<name>~<8 hex>`` (and finds it again on a relaunch); under an
explicit hydra.sweeper.study_name it is refused, naming the keys that differ, before any run
exists; launches of one objective share one study and its budget."""
import re

import pytest

from engine_checks import EXPERIMENT, FAST, Sweep, all_study_names, assert_invariant, new_workdir
from sweep_helpers import dataset, load_study, mlflow_client, run_sweep, trial_runs

pytestmark = pytest.mark.slow

ARGS = [*FAST, "hydra.sweeper.batch_size=2"]


SHARED_FIXTURES = ("stores",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One pair of stores, launched into as the tests below describe (in this order)."""
    root = tmp_path_factory.mktemp("identity")
    dataset(root)
    work = new_workdir(root, "work")
    run_sweep(work, *ARGS, "hydra.sweeper.n_trials=2", "loss=svm")
    run_sweep(work, *ARGS, "hydra.sweeper.n_trials=2", "loss=softmax")
    run_sweep(work, *ARGS, "hydra.sweeper.n_trials=2", "model.num_iters=40")
    run_sweep(work, *ARGS, "hydra.sweeper.n_trials=3", "loss=softmax")  # the softmax study again: one more
    return work


def studies_by_objective(work):
    names = set(all_study_names(work))
    assert EXPERIMENT in names
    others = {}
    for name in names - {EXPERIMENT}:
        if name.startswith(EXPERIMENT + "~"):
            assert re.fullmatch(re.escape(EXPERIMENT) + r"~[0-9a-f]{8}", name), name
            params = trial_runs(mlflow_client(work), extra=f"tags.`optuna.study_name` = '{name}'")[0].data.params
            others["softmax" if params["loss"] == "softmax" else f"num_iters={params['num_iters']}"] = name
    return others


def parent(work, name):
    client = mlflow_client(work)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                f"tags.`linear_sweeps.role` = 'study' and tags.`optuna.study_name` = '{name}'")
    return run


def test_another_loss_and_another_num_iters_get_their_own_studies(stores):
    others = studies_by_objective(stores)
    assert sorted(others) == ["num_iters=40", "softmax"], others
    client = mlflow_client(stores)
    expected = {EXPERIMENT: ("svm", "60", 2), others["softmax"]: ("softmax", "60", 3),
                others["num_iters=40"]: ("svm", "40", 2)}
    for name, (loss, iters, n) in expected.items():
        assert_invariant(stores, name, n)
        runs = trial_runs(client, extra=f"tags.`optuna.study_name` = '{name}'")
        assert len(runs) == n
        for run in runs:
            assert (run.data.params["loss"], run.data.params["num_iters"]) == (loss, iters), (name, run.info.run_name)
            assert run.info.run_name.startswith(f"{loss}-")
        p = parent(stores, name).data.params
        assert (p["loss"], p["num_iters"]) == (loss, iters), (name, p)


def test_the_alternative_study_is_found_again_by_its_objective(stores):
    others = studies_by_objective(stores)
    study = load_study(stores, others["softmax"])
    assert len(study.trials) == 3  # two launches, n_trials=2 then 3: one study, not a third one
    assert len(all_study_names(stores)) == 3


def test_workers_of_one_objective_share_an_explicit_study_and_its_budget(stores):
    team = [*ARGS, "hydra.sweeper.study_name=team", "hydra.sweeper.n_trials=5", "hydra.sweeper.batch_size=1"]
    workers = [Sweep(stores, *team, tag=f"team{i}") for i in range(2)]
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert codes == [0, 0], "\n".join(w.log() for w in workers)
    assert_invariant(stores, "team", 5)
    client = mlflow_client(stores)
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    before = len(client.search_runs([exp], max_results=1000))
    proc = run_sweep(stores, *team, "loss=softmax", check=False)
    assert proc.returncode != 0
    assert "hydra.sweeper.study_name='team'" in proc.stderr and "loss.name" in proc.stderr, proc.stderr[-3000:]
    assert len(client.search_runs([exp], max_results=1000)) == before  # refused before any run exists
    assert "team" in all_study_names(stores) and len(load_study(stores, "team").trials) == 5
