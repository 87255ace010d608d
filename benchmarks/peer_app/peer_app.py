"""The peer's task: one homework-style classifier per Hydra job, logged to MLflow.

    python peer_app.py --multirun loss=svm archive=PATH mlflow_uri=sqlite:///PATH

Run by benchmarks/peer.py in its own virtual environment (hydra-optuna-sweeper 1.3.0 needs
optuna<3), with only ``linear_models`` of this repo on the path: the repo root would also put
the project's own Hydra sweeper plugin (hydra_plugins/) in front of Hydra. Hydra's basic launcher
runs the jobs one after another in this one process; each trains with the project's own
single-trial trainer (linear_models.train_linear_classifier: minibatch SGD, the same loss code as
linear-sweep) on the project's own split, and returns the validation accuracy to the sweeper.
"""
from __future__ import annotations

import time

import hydra
import mlflow
from omegaconf import DictConfig

import linear_models as lm
from linear_models.data import load_image_folder, preprocess

LOSSES = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}
_DATA: dict = {}  # preprocessed splits, kept across the jobs of this process (see load)


def load(cfg: DictConfig) -> dict:
    """The splits linear-sweep trains on (its dataset=image_folder defaults), once per process.

    Kept across jobs, which is kinder to the peer than a task that loads its data per job: the
    ratio benchmarks/peer.py prints is then a lower bound.
    """
    key = (cfg.archive, cfg.validation_ratio, cfg.split_seed, cfg.subtract_mean, cfg.bias_trick)
    if key not in _DATA:
        raw = load_image_folder(cfg.archive)  # the decoded-array cache linear-sweep uses too
        _DATA[key] = preprocess(raw, validation_ratio=cfg.validation_ratio, bias_trick=cfg.bias_trick,
                                subtract_mean=cfg.subtract_mean, seed=cfg.split_seed)
    return _DATA[key]


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    start = time.time()
    data = load(cfg)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    mlflow.set_experiment(cfg.experiment)
    params = {k: cfg[k] for k in ("loss", "learning_rate", "reg", "num_iters", "batch_size", "seed")}
    try:
        with mlflow.start_run():
            mlflow.log_params(params)
            W, history = lm.train_linear_classifier(
                LOSSES[cfg.loss], None, data["X_train"], data["y_train"], learning_rate=cfg.learning_rate,
                reg=cfg.reg, num_iters=cfg.num_iters, batch_size=cfg.batch_size, seed=cfg.seed)
            acc = {f"{split}_acc": lm.accuracy(lm.predict_linear_classifier(W, data[f"X_{split}"]), data[f"y_{split}"])
                   for split in ("train", "val", "test")}
            mlflow.log_metrics({**acc, "final_loss": float(history[-1])})
    finally:  # a diverged trial (TrainingDivergedError) is told FAIL by the sweeper; its time counts
        if cfg.timings:
            with open(cfg.timings, "a") as f:
                f.write(f"{start} {time.time()}\n")
    return acc["val_acc"]


if __name__ == "__main__":
    main()
