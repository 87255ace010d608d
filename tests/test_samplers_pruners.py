"""Every sampler and every pruner end to end with batched asks (batch_size >= 2): the study
reaches exactly n_trials and both stores agree. Each launch pairs a sampler with a pruner, so
six launches cover the six samplers and the three pruners."""
import pytest
from optuna.trial import TrialState

from engine_checks import FAST, assert_invariant, new_workdir
from sweep_helpers import dataset, run_sweep
from sweeps.study import PRUNERS, SAMPLERS

pytestmark = pytest.mark.slow

STUDY = "linear-sweeps-image_folder"
# A wide learning-rate range (tiny rates learn nothing: something for the pruners to prune),
# evaluated every 10 iterations (5 intermediate reports per trial).
SPACE = ["model.learning_rate=tag(log, interval(1e-7, 1e-1))", "model.reg=tag(log, interval(1e-6, 1e-2))",
         "eval_every=10"]
GRID = ["model.learning_rate=choice(1e-7,0.1)", "model.reg=choice(1e-4,1e-3)", "eval_every=10"]  # 4 trials
PRUNE_EARLY = {"median": ["+hydra.sweeper.pruner_kwargs.n_startup_trials=1",
                          "+hydra.sweeper.pruner_kwargs.n_warmup_steps=0"],
               "successive_halving": ["+hydra.sweeper.pruner_kwargs.min_resource=10"],
               "hyperband": ["+hydra.sweeper.pruner_kwargs.min_resource=10",
                             "+hydra.sweeper.pruner_kwargs.max_resource=60"],
               "none": []}
CASES = [("tpe", "median", 4, 2), ("random", "successive_halving", 6, 3), ("qmc", "hyperband", 4, 2),
         ("grid", "median", 4, 2), ("cmaes", "none", 4, 2), ("gp", "none", 4, 2)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("samplers")
    dataset(root)
    return root


def test_cases_cover_every_sampler_and_pruner():
    assert {c[0] for c in CASES} == set(SAMPLERS)
    assert {c[1] for c in CASES} == set(PRUNERS)


@pytest.mark.parametrize("sampler,pruner,n,batch", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_sampler_and_pruner(base, sampler, pruner, n, batch):
    work = new_workdir(base, f"{sampler}-{pruner}")
    run_sweep(work, *FAST, f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.pruner={pruner}",
              *PRUNE_EARLY[pruner], f"hydra.sweeper.n_trials={n}", f"hydra.sweeper.batch_size={batch}",
              *(GRID if sampler == "grid" else SPACE))
    study = assert_invariant(work, STUDY, n, f"{sampler} + {pruner}:")
    assert len(study.trials) == n  # nothing interrupted: no trial beyond the budget
    if sampler == "grid":
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == n  # the whole grid, once
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert t.intermediate_values and max(t.intermediate_values) < 60
