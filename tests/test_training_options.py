"""The optimizer, preprocess and augment groups in real sweeps: conditional params, the runs'
params, pixel-space templates, test accuracy on the transformed data, and linear-compare
grouped by the optimizer. Plus the conditions' checks and the study identity of old stores."""
import mlflow
import optuna
import pytest
import torch
from omegaconf import OmegaConf

from sweeps import compare
from sweeps.conditions import ConditionError, parse_conditions, suggest_conditional
from sweeps.engine.identity import Objective
from sweeps.search_space import plan_sweep
from sweep_helpers import run_sweep


SHARED_FIXTURES = ("sweep",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """sweep=accuracy (its conditions), with a few of its params narrowed on the command line."""
    work = tmp_path_factory.mktemp("options") / "sweep"
    run_sweep(work, "sweep=accuracy", "loss=softmax", "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=10",
              "model.num_iters=choice(60,80)", "preprocess=choice(mean,zca,pca)", "preprocess.components=20",
              "tracking.test_eval=all")
    return work


def trial_runs(work):
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'")
    return client, exp, runs


def test_conditional_params_exist_only_where_their_condition_holds(sweep):
    (study,) = optuna.get_all_study_summaries(f"sqlite:///{sweep / 'optuna.db'}")
    trials = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert len(trials) == 10 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        assert ("optimizer.momentum" in t.params) == (t.params["optimizer"] == "nesterov"), t.params
        assert ("optimizer.average_start" in t.params) == (t.params["optimizer"] == "asgd"), t.params
        assert ("preprocess.epsilon" in t.params) == (t.params["preprocess"] in ("zca", "pca")), t.params


def test_runs_record_each_choice_and_train_on_its_features(sweep):
    client, _, runs = trial_runs(sweep)
    assert len(runs) == 10
    for run in runs:
        p = run.data.params
        assert p["optimizer"] in ("sgd", "nesterov", "asgd") and p["augment"] in ("none", "flip")
        assert (p["momentum"] != "None") == (p["optimizer"] == "nesterov"), p
        assert (p["average_start"] != "None") == (p["optimizer"] == "asgd"), p
        assert (p["epsilon"] != "None") == (p["preprocess"] in ("zca", "pca")), p
        assert p["components"] == ("20" if p["preprocess"] == "pca" else "None")
        assert 0.0 <= run.data.metrics["test_acc"] <= 1.0  # scored on the transformed test split
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"templates.png", "weights.pt", "config.yaml"} <= artifacts
        W = torch.load(client.download_artifacts(run.info.run_id, "weights.pt", str(sweep)), weights_only=True)["W"]
        assert W.shape[0] == (21 if p["preprocess"] == "pca" else 8 * 8 * 3 + 1)


def test_compare_groups_by_the_optimizer(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert compare.main(["--tracking-uri", f"sqlite:///{sweep / 'mlflow.db'}", "--group-by", "optimizer",
                         "--no-log", "--out", str(out)]) == 0
    title = (out / "report.md").read_text().splitlines()[0]
    printed = capsys.readouterr().out
    _, _, runs = trial_runs(sweep)
    names = sorted({r.data.params["optimizer"] for r in runs})
    assert title == "# linear-compare: " + " vs ".join(names)
    for name in names:
        n = sum(r.data.params["optimizer"] == name for r in runs)
        assert f"{name}: {n} trials ({n} completed" in printed


def test_condition_entries_are_checked():
    space = {"optimizer": "choice(sgd, nesterov)", "optimizer.momentum": "interval(0.5, 0.9)"}
    for conditions, message in [
        ({"optimizer.average_start": "optimizer=asgd"}, "optimizer.average_start is not in the search space"),
        ({"optimizer.momentum": "optimizer"}, "must be 'PARENT=VALUE[,VALUE...]', got 'optimizer'"),
        ({"optimizer.momentum": "optimizer=asgd"}, "optimizer never takes asgd (its choices: sgd, nesterov)"),
        ({"optimizer.momentum": "optimizer.momentum=0.5"}, "the parent optimizer.momentum must be an unconditional"),
    ]:
        with pytest.raises(ConditionError) as e:
            parse_conditions(conditions, plan_sweep(space, [], distributions=False).search_space)
        assert message in str(e.value)


def test_a_fixed_parent_decides_from_the_config():
    plan = plan_sweep({"optimizer.momentum": "interval(0.5, 0.9)", "model.reg": "interval(0.0, 0.1)"}, [],
                      conditions={"optimizer.momentum": "optimizer=nesterov"})
    study = optuna.create_study()
    for name, expected in (("nesterov", True), ("sgd", False)):
        base = OmegaConf.create({"optimizer": {"name": name, "momentum": 0.9}})
        trial = study.ask({"model.reg": plan.search_space["model.reg"]})
        suggest_conditional(trial, plan.search_space, plan.conditions, base)
        assert ("optimizer.momentum" in trial.params) == expected


def test_the_new_sections_at_their_defaults_leave_an_old_study_identity_unchanged():
    from sweeps.config import Config

    full = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    full["dataset"]["root"] = full["data_dir"]
    before = {k: v for k, v in full.items() if k not in ("optimizer", "preprocess", "augment")}
    space = {"model.reg": "interval(0.0, 0.1)"}
    digest = Objective.of(OmegaConf.create(before), space, "tpe", "maximize").digest
    assert Objective.of(OmegaConf.create(full), space, "tpe", "maximize").digest == digest
    full["optimizer"]["name"] = "nesterov"
    assert Objective.of(OmegaConf.create(full), space, "tpe", "maximize").digest != digest
