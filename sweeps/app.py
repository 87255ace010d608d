"""`linear-sweep` (also `python -m sweeps`): the Hydra app.

    linear-sweep                                   # one training run with the defaults
    linear-sweep --multirun loss=svm,softmax       # an Optuna sweep per loss, tracked in MLflow

A single run trains ``cfg`` and records it in MLflow; with ``--multirun`` the `linear_optuna`
sweeper (hydra_plugins/, registered here as well as found by Hydra's plugin scan) runs the
studies and calls the same trial runner.
"""
from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import register_configs
from .hydra_errors import install as install_hydra_errors

log = logging.getLogger(__name__)


def config_dir() -> str:
    """conf/ of a checkout (editable install), else the copy shipped inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"linear-sweeps config folder not found next to {here} (looked for conf/config.yaml)")


def train(cfg: DictConfig) -> float:
    """Train one configuration, record it as an MLflow run; returns its validation accuracy."""
    import math

    from .config import check_batch_size, validate_config

    validate_config(cfg)  # before the heavy imports: a bad value is refused at once

    import linear_models as lm

    from .data import load_features, resolve_device
    from .runner import COMPLETED, TrialSpec, run_trials, trial_params
    from .tracking import TAG_FAILURE, TAG_OVERRIDES, TAG_ROLE, Tracker

    device = resolve_device(cfg.device.type)
    data = load_features(cfg, device)  # data problems surface before a run exists
    check_batch_size(cfg, data["X_train"].shape[0])
    tracker = Tracker.from_config(cfg.tracking)
    try:
        overrides = " ".join(HydraConfig.get().overrides.task)
    except ValueError:
        overrides = ""
    run_id = tracker.create_run(f"{cfg.loss.name} single lr={cfg.model.learning_rate:.2e} reg={cfg.model.reg:.2e}",
                                tags={TAG_ROLE: "single", TAG_OVERRIDES: overrides}, params=trial_params(cfg, device))
    from .engine.shutdown import ShutdownGuard

    status = "FAILED"
    try:
        with ShutdownGuard(timeout=10):  # SIGTERM / SIGHUP end the run KILLED, as Ctrl-C does
            (out,) = run_trials([TrialSpec(cfg=cfg, run_id=run_id)], tracker)
        if out.status == COMPLETED:
            W = out.weights.to(device)
            out.test_acc = lm.accuracy(lm.predict_linear_classifier(W, data["X_test"]), data["y_test"])
            tracker.log_metrics(run_id, {"test_acc": out.test_acc}, step=out.iterations)
            status = "FINISHED"
        else:
            tracker.set_tags(run_id, {TAG_FAILURE: out.message})
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_run(run_id, status)
    if out.status != COMPLETED:
        raise RuntimeError(f"training failed: {out.message}")
    print(f"{cfg.loss.name}: train_acc={out.train_acc:.4f} val_acc={out.val_acc:.4f} test_acc={out.test_acc:.4f} "
          f"({out.seconds:.1f}s; MLflow run {run_id} at {tracker.uri})")
    return out.val_acc if math.isfinite(out.val_acc) else float("nan")


def register_plugins() -> None:
    """Register the `linear_optuna` sweeper with Hydra before it starts.

    Hydra finds plugins by scanning the folders of the ``hydra_plugins`` namespace package; a
    default (PEP 660) editable install maps the package through an import hook instead, which
    that scan cannot list, and `--multirun` then fails with "Could not find
    'hydra/sweeper/linear_optuna'". Importing the plugin stores its config (ConfigStore group
    hydra/sweeper) and registering it makes `_target_` resolvable, however the package was
    installed. A class the scan already found is not registered twice.
    """
    from hydra.core.plugins import Plugins

    from hydra_plugins.linear_sweeps_sweeper.linear_optuna_sweeper import LinearOptunaSweeper

    plugins = Plugins.instance()  # the first call scans hydra_plugins (what Hydra does anyway)
    if f"{LinearOptunaSweeper.__module__}.{LinearOptunaSweeper.__name__}" not in plugins.class_name_to_class:
        plugins.register(LinearOptunaSweeper)


register_configs()
register_plugins()
install_hydra_errors()  # Hydra's command-line errors: one line and exit 2, like ours


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from .errors import exit_on_user_error

    with exit_on_user_error():  # the user's to fix: one line, no traceback
        return train(cfg)


def main() -> None:
    from .engine.shutdown import SweepInterrupted

    try:
        _hydra_main()
    except SweepInterrupted as e:  # open trials are marked for the next launch: say so, no traceback
        print(f"linear-sweep: {e} (a sweep resumes when the same command runs again)", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    finally:
        # The process ends here: skip the interpreter's last full garbage collection over
        # every object a sweep leaves behind (about 2 s; the OS frees the memory anyway).
        gc.freeze()
