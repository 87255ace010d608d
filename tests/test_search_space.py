"""Hydra override grammar -> Optuna distributions, grid points and the outer grid."""
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.search_space import SearchSpaceError, grid_values, plan_sweep


@pytest.mark.parametrize("expr,expected", [
    ("tag(log, interval(1e-4, 1.0))", FloatDistribution(1e-4, 1.0, log=True)),
    ("interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
    ("interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra reads interval bounds as floats
    ("int(interval(1, 10))", IntDistribution(1, 10)),
    ("tag(log, int(interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
    ("choice(svm, softmax)", CategoricalDistribution(["svm", "softmax"])),
    ("choice(1e-3, 1e-2)", CategoricalDistribution([1e-3, 1e-2])),
    ("range(100, 501, 100)", IntDistribution(100, 500, step=100)),
    ("range(1, 10, 3)", IntDistribution(1, 7, step=3)),  # stop excluded: 1, 4, 7
    ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
])
def test_override_to_distribution(expr, expected):
    plan = plan_sweep({"x": expr}, [])
    assert plan.search_space["x"] == expected
    assert plan.cells == [[]]


@pytest.mark.parametrize("expr,points", [
    ("choice(a, b, c)", ["a", "b", "c"]),
    ("range(1, 10, 3)", [1, 4, 7]),
    ("range(0.1, 0.5, 0.1)", [0.1, 0.2, 0.3, 0.4]),
])
def test_grid_points_follow_the_bound_convention(expr, points):
    plan = plan_sweep({"x": expr}, [])
    assert grid_values("x", plan.search_space["x"]) == points


@pytest.mark.parametrize("expr,message", [
    ("interval(1.0, 0.1)", r"x: interval needs low < high"),
    ("tag(log, interval(0.0, 1.0))", r"x: a log interval needs low > 0"),
    ("0.5", r"hydra.sweeper.params.x: '0.5' is not a search space"),
])
def test_bad_search_space_is_named(expr, message):
    with pytest.raises(SearchSpaceError, match=message):
        plan_sweep({"x": expr}, [])


def test_grid_rejects_continuous_interval():
    plan = plan_sweep({"model.reg": "interval(0.1, 0.2)"}, [])
    with pytest.raises(SearchSpaceError, match=r"model.reg: the grid sampler needs choice\(...\) or range\(...\)"):
        grid_values("model.reg", plan.search_space["model.reg"])


def test_outer_grid_and_command_line_search_space():
    plan = plan_sweep({"model.learning_rate": "tag(log, interval(1e-4, 1))"},
                      ["loss=svm,softmax", "seed=0,1", "model.num_iters=50",
                       "model.reg=tag(log, interval(1e-6, 1e-2))", "model.learning_rate=choice(0.1, 0.2)"])
    assert plan.cells == [["loss=svm", "seed=0"], ["loss=svm", "seed=1"], ["loss=softmax", "seed=0"],
                          ["loss=softmax", "seed=1"]]
    assert plan.fixed == ["model.num_iters=50"]
    assert plan.search_space["model.reg"] == FloatDistribution(1e-6, 1e-2, log=True)
    # The command line wins over hydra.sweeper.params.
    assert plan.search_space["model.learning_rate"] == CategoricalDistribution([0.1, 0.2])


def test_comma_list_of_a_search_key_stays_in_the_space():
    plan = plan_sweep({"model.reg": "choice(1, 2)"}, ["model.reg=3,4"])
    assert plan.cells == [[]]
    assert plan.search_space["model.reg"] == CategoricalDistribution([3, 4])


def test_sampler_options_nested_per_sampler():
    from sweeps.study import sampler_options

    kwargs = {"tpe": {"multivariate": True}, "grid": {"x": 1}, "n_startup_trials": 5}
    assert sampler_options("tpe", kwargs) == {"multivariate": True, "n_startup_trials": 5}
    assert sampler_options("random", {"tpe": {"multivariate": True}}) == {}
