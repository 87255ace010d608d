"""The study report on a parent run: which plots for which search space, and that they open."""
import math

import optuna
import pytest
from PIL import Image

from sweeps.study_report import log_study_report
from sweeps.tracking import Tracker


def _study(params):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("model.learning_rate", 1e-4, 1.0, log=True)
        reg = trial.suggest_float("model.reg", 1e-6, 1e-2, log=True)
        extra = trial.suggest_int("model.num_iters", 100, 1000) if "model.num_iters" in params else 0
        return 0.4 - abs(math.log10(lr) + 1.5) / 10 - abs(math.log10(reg) + 4) / 50 + extra * 1e-5

    study.optimize(objective, n_trials=12)
    return study


@pytest.mark.parametrize("params,expected", [
    (("model.learning_rate", "model.reg"), set()),
    (("model.learning_rate", "model.reg", "model.num_iters"), {"contour.png", "param_importances.png"}),
])
def test_report_plots_follow_the_search_space(tmp_path, params, expected):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "reports", str(tmp_path / "artifacts"))
    parent = tracker.create_run("study", tags={})
    study = _study(params)
    summary = {"trials": {"COMPLETE": 12}, "best_val_acc": study.best_value, "best_trial": study.best_trial.number,
               "best_run_id": "r", "best_params": study.best_params}
    log_study_report(study, tracker, parent, summary)
    folder = tracker.local_artifact_dir(parent)
    names = {p.name for p in folder.iterdir()}
    assert names == {"trials.csv", "accuracy_map.png", "optimization_history.png"} | expected
    for name in names - {"trials.csv"}:
        with Image.open(folder / name) as img:
            img.verify()
    run = tracker.get_run(parent)
    assert run.data.metrics["best_val_acc"] == pytest.approx(study.best_value)
    assert run.data.tags["best.model.learning_rate"] == str(study.best_params["model.learning_rate"])


def test_contour_of_a_large_space_shows_its_two_most_important_params():
    """Five params: the contour is one panel of the two that matter most, not a 5 x 5 grid."""
    from sweeps.study_report import contour_params

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("model.learning_rate", 0, 1) + 2 * t.suggest_float("b", 0, 1)
                              + 3 * t.suggest_float("c", 0, 1) + 0 * t.suggest_float("model.reg", 0, 1)
                              + 0 * t.suggest_float("e", 0, 1)), n_trials=30)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert contour_params(study, complete) == ["c", "b"]
    # Too few trials for importances: lr and reg.
    assert contour_params(study, complete[:5]) == ["model.learning_rate", "model.reg"]
