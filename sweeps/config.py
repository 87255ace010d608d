"""Structured configs (the schema under conf/) and the value checks run before anything starts.

Hydra merges conf/*.yaml onto these dataclasses, so a wrong type or an unknown key fails at
composition; :func:`validate_config` then checks values (lr > 0, ...) with messages that name
the parameter, the rule and the value, and refuses keys added with ``+`` under a section of the
schema (``+model.learnin_rate=0.5``), which would be ignored. Light: no torch, Optuna or MLflow.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

DTYPES = ("float32", "float64")
MATMUL_DTYPES = (None, "auto", "bfloat16", "float16", "float32", "float64")
LR_DECAYS = ("none", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("cifar10", "image_folder")
LOSSES = ("svm", "softmax")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "asgd")  # as linear_models.OPTIMIZERS (light: no torch here)
PREPROCESSORS = ("mean", "standardize", "zca", "pca")
AUGMENTS = ("none", "flip")
TEST_EVAL = ("best", "all")
DIAGNOSTIC_PLOTS = ("best", "all")


@dataclass
class ModelConfig:
    """The linear classifier and its SGD."""

    learning_rate: float = 1e-3
    reg: float = 1e-5
    num_iters: int = 1500
    batch_size: int = 200
    init_scale: float = 1e-6
    dtype: str = "float32"
    lr_decay: str = "none"  # none | step | cosine
    lr_decay_every: Optional[int] = None  # step decay period (default: num_iters / 3)
    lr_decay_gamma: float = 0.5  # step decay factor
    matmul_dtype: Optional[str] = "auto"  # auto | null | bfloat16 ...: precision of the two matmuls of each step
    score_in_matmul_dtype: bool = False  # accuracies scored in matmul_dtype too, else in dtype (the weights' own)


@dataclass
class OptimizerConfig:
    """How the minibatch gradients update W (linear_models.optimizers)."""

    name: str = "sgd"  # sgd | momentum | nesterov | asgd
    momentum: float = 0.9  # momentum, nesterov
    average_start: float = 0.5  # asgd: average the iterates after this fraction of num_iters


@dataclass
class PreprocessConfig:
    """The feature transform fitted on the training split (linear_models.data.whitening)."""

    name: str = "mean"  # mean (the assignment's) | standardize | zca | pca
    epsilon: float = 0.1  # zca, pca: added to the covariance's eigenvalues
    components: int = 512  # pca: leading components kept


@dataclass
class AugmentConfig:
    name: str = "none"  # none | flip (random horizontal flips of training minibatches)


@dataclass
class LossConfig:
    name: str = "svm"


@dataclass
class DeviceConfig:
    type: str = "auto"  # auto: cuda when available, else cpu


@dataclass
class DatasetConfig:
    name: str = "cifar10"
    root: str = MISSING
    download: bool = False  # cifar10 only: fetch the official archive when missing
    url: Optional[str] = None  # cifar10 only: where `download` fetches it (null: the official URL)
    validation_ratio: float = 0.2
    subtract_mean: bool = True
    bias_trick: bool = True
    num_train: Optional[int] = None  # subsample for quick runs (None: all)
    num_val: Optional[int] = None
    num_test: Optional[int] = None
    split_seed: int = 0
    cache_dir: Optional[str] = None  # decoded-array cache (null: ~/.cache/linear-sweeps; false: off)


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"  # any MLflow tracking URI, e.g. http://host:5000
    experiment: str = "linear-sweeps"
    artifact_location: Optional[str] = "mlartifacts"  # for new experiments on a local store
    loss_every: int = 20  # log the training loss every k iterations
    log_weights: bool = True
    log_images: bool = True
    # Loss-curve and confusion-matrix images: "best" for each worker's best trial of each study
    # (every run's loss is also a metric the MLflow UI charts), "all" for every trial.
    diagnostic_plots: str = "best"
    test_eval: str = "best"  # best: test accuracy for each study's best trial; all: every trial
    http_max_retries: int = 8  # MLflow client retries (with backoff) when the server is away
    http_backoff_factor: int = 1  # seconds; waits 1, 2, 4, ... between retries
    http_timeout: int = 60


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    eval_every: int = 250  # validation accuracy (and pruning checks) every k iterations
    metric: str = "val_acc"
    data_dir: str = "data"


def with_schema_defaults(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` (e.g. a run's saved config.yaml) with every section of the schema it
    lacks (a run from before that config group existed) set to the schema's defaults."""
    out = cfg.copy()
    with open_dict(out):
        for f in dataclasses.fields(Config):
            if f.name not in out and f.default_factory is not dataclasses.MISSING:
                out[f.name] = OmegaConf.structured(f.default_factory())
    return out


def register_configs() -> None:
    cs = ConfigStore.instance()
    # The root schema types every group's node, so group files are checked when merged.
    cs.store(name="config_schema", node=Config)


class ConfigError(ValueError):
    """A config value breaks a rule; raised before any run is created."""


def _rule(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}, got {value!r}")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def did_you_mean(name: str, known) -> str:
    """`` (did you mean model.learning_rate?)`` for the closest known key, or ''."""
    prefix, _, last = name.rpartition(".")
    close = difflib.get_close_matches(last, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""


def unknown_key_error(cfg: DictConfig, dotted: str, what: str = "") -> ConfigError:
    """ConfigError for a key the config lacks, with the closest key of its section."""
    parent_path, _, _ = dotted.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path, default=None) if parent_path else cfg
    known = list(parent.keys()) if isinstance(parent, DictConfig) else []
    section = parent_path or "the config"
    return ConfigError(f"{what}{dotted} is not a key of {section}{did_you_mean(dotted, known)}")


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Refuse keys that no field of the section's dataclass declares (added with ``+``).

    Generic over the schema: every section whose node is typed by a dataclass (model, loss,
    device, dataset, tracking and any section added to :class:`Config`) is checked, recursively;
    Hydra's own ``hydra`` section is Hydra's to check.
    """
    for key in node.keys():
        if not path and key == "hydra":
            continue
        kind = OmegaConf.get_type(node, key)
        if kind is None or not dataclasses.is_dataclass(kind):
            continue
        child = node[key]
        name = f"{path}{key}"
        fields = {f.name for f in dataclasses.fields(kind)}
        for unknown in sorted(set(map(str, child.keys())) - fields):
            raise ConfigError(f"{name}.{unknown} is not a key of {name}{did_you_mean(f'{name}.{unknown}', fields)}")
        check_known_keys(child, f"{name}.")


def check_batch_size(cfg: DictConfig, n_train: int, high: Optional[int] = None) -> None:
    """model.batch_size (or a search space's largest, ``high``) must fit the training split:
    a minibatch larger than the split would train slowly on repeated images."""
    largest = cfg.model.batch_size if high is None else high
    what = "model.batch_size" if high is None else "the search space's largest model.batch_size"
    _rule(largest <= n_train, what, f"<= the training split ({n_train} images)", largest)


def _validate_training_options(cfg: DictConfig) -> None:
    """The optimizer, preprocess and augment groups."""
    o, p = cfg.optimizer, cfg.preprocess
    _rule(o.name in OPTIMIZERS, "optimizer.name", f"one of {list(OPTIMIZERS)}", o.name)
    _rule(_is_num(o.momentum) and 0 <= o.momentum < 1, "optimizer.momentum", "in [0, 1)", o.momentum)
    _rule(_is_num(o.average_start) and 0 <= o.average_start < 1, "optimizer.average_start", "in [0, 1)",
          o.average_start)
    _rule(p.name in PREPROCESSORS, "preprocess.name", f"one of {list(PREPROCESSORS)}", p.name)
    _rule(_is_num(p.epsilon) and p.epsilon >= 0, "preprocess.epsilon", ">= 0", p.epsilon)
    _rule(p.components >= 1, "preprocess.components", "an integer >= 1", p.components)
    _rule(p.name == "mean" or cfg.dataset.subtract_mean, "dataset.subtract_mean",
          f"true with preprocess={p.name} (it centres each feature itself)", cfg.dataset.subtract_mean)
    _rule(cfg.augment.name in AUGMENTS, "augment.name", f"one of {list(AUGMENTS)}", cfg.augment.name)


def validate_config(cfg: DictConfig) -> None:
    """Check values of a composed config; raise ConfigError naming parameter, rule and value."""
    check_known_keys(cfg)
    check_values(cfg)
    check_environment(cfg)


# Sections whose values the environment checks read: a trial that changes none of them (the
# usual lr x reg search) needs only :func:`check_values` once its cell passed them.
ENVIRONMENT_SECTIONS = ("device", "dataset", "tracking")


def check_environment(cfg: DictConfig) -> None:
    """What a config needs of this machine: CUDA when asked for, the dataset root, a tracking URI."""
    if cfg.device.type == "cuda":
        import torch

        _rule(torch.cuda.is_available(), "device.type", "'cpu' or 'auto' on a machine without CUDA", "cuda")
    d = cfg.dataset
    if d.name == "image_folder":
        _rule(Path(str(d.root)).expanduser().exists(), "dataset.root",
              "an existing image folder or .tar.gz (ROOT/train/<class>/*, ROOT/test/<class>/*)", d.root)
    from .db_urls import tracking_uri

    tracking_uri(str(cfg.tracking.uri))


def check_values(cfg: DictConfig) -> None:
    """The value rules of every section (lr > 0, known loss names, ...)."""
    m = cfg.model
    _rule(_is_num(m.learning_rate) and m.learning_rate > 0, "model.learning_rate", "> 0", m.learning_rate)
    _rule(_is_num(m.reg) and m.reg >= 0, "model.reg", ">= 0", m.reg)
    _rule(m.num_iters >= 1, "model.num_iters", "an integer >= 1", m.num_iters)
    _rule(m.batch_size >= 1, "model.batch_size", "an integer >= 1", m.batch_size)
    _rule(_is_num(m.init_scale) and m.init_scale >= 0, "model.init_scale", ">= 0", m.init_scale)
    _rule(m.dtype in DTYPES, "model.dtype", f"one of {list(DTYPES)}", m.dtype)
    _rule(m.matmul_dtype in MATMUL_DTYPES, "model.matmul_dtype", f"null or one of {list(MATMUL_DTYPES[1:])}", m.matmul_dtype)
    _rule(m.lr_decay in LR_DECAYS, "model.lr_decay", f"one of {list(LR_DECAYS)}", m.lr_decay)
    _rule(m.lr_decay_every is None or m.lr_decay_every >= 1, "model.lr_decay_every", "null or an integer >= 1", m.lr_decay_every)
    _rule(_is_num(m.lr_decay_gamma) and 0 < m.lr_decay_gamma <= 1, "model.lr_decay_gamma", "in (0, 1]", m.lr_decay_gamma)
    _rule(cfg.loss.name in LOSSES, "loss.name", f"one of {list(LOSSES)}", cfg.loss.name)
    _validate_training_options(cfg)
    _rule(cfg.device.type in DEVICES, "device.type", f"one of {list(DEVICES)}", cfg.device.type)
    d = cfg.dataset
    _rule(d.name in DATASETS, "dataset.name", f"one of {list(DATASETS)}", d.name)
    _rule(_is_num(d.validation_ratio) and 0 <= d.validation_ratio < 1, "dataset.validation_ratio", "in [0, 1)", d.validation_ratio)
    for key in ("num_train", "num_val", "num_test"):
        v = d[key]
        _rule(v is None or v >= 1, f"dataset.{key}", "null or an integer >= 1", v)
    _rule(cfg.eval_every >= 1, "eval_every", "an integer >= 1", cfg.eval_every)
    _rule(cfg.metric in ("val_acc",), "metric", "'val_acc' (selection is by validation accuracy only)", cfg.metric)
    t = cfg.tracking
    _rule(t.loss_every >= 1, "tracking.loss_every", "an integer >= 1", t.loss_every)
    _rule(t.diagnostic_plots in DIAGNOSTIC_PLOTS, "tracking.diagnostic_plots", f"one of {list(DIAGNOSTIC_PLOTS)}",
          t.diagnostic_plots)
    _rule(t.test_eval in TEST_EVAL, "tracking.test_eval", f"one of {list(TEST_EVAL)}", t.test_eval)
    _rule(isinstance(t.experiment, str) and t.experiment.strip() != "", "tracking.experiment", "a non-empty name", t.experiment)
