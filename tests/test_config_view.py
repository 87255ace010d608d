"""Trial configs as ConfigViews (sweeps/config_view.py): the same values, checks, config.yaml,
data-cache key and batching key as the DictConfig a trial got before; a DictConfig where only
OmegaConf gives the right answer."""
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from sweeps.app import config_dir
from sweeps.config import ConfigError, register_configs
from sweeps.config_view import ConfigView, plain_config
from sweeps.data import dataset_key
from sweeps.engine.cells import Cell, CellComposer
from sweeps.recording import config_yaml
from sweeps.runner import group_key, trial_params
from sweeps.search_space import SweepPlan

register_configs()


def _cell(tmp_path, *overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        base = compose("config", overrides=["device=cpu", f"dataset.root={tmp_path}", *overrides])
    return Cell([], base, SweepPlan(search_space={}, conditions={}, fixed=[], cells=[[]])), CellComposer(None, base)


def _dictconfig(cell, params):
    cfg = cell.base.copy()
    for k, v in params.items():
        OmegaConf.update(cfg, k, v)
    return cfg


@pytest.mark.parametrize("params", [{"model.learning_rate": 0.0123, "model.reg": 3e-4},
                                    {"model.reg": 1, "optimizer.momentum": 0.5},  # an int into a float field
                                    {"model.batch_size": 100, "model.num_iters": 30}])
def test_a_trial_view_reads_as_its_dictconfig(params, tmp_path):
    import torch

    cell, composer = _cell(tmp_path)
    view = composer.trial_config(cell, params)
    old = _dictconfig(cell, params)
    assert isinstance(view, ConfigView)
    assert plain_config(view) == OmegaConf.to_container(old, resolve=True)
    assert OmegaConf.create(config_yaml(view)) == OmegaConf.create(config_yaml(old))
    assert view.model.learning_rate == old.model.learning_rate and type(view.model.reg) is type(old.model.reg)
    assert dataset_key(view.dataset) == dataset_key(old.dataset)  # one data-cache entry for both
    assert trial_params(view, torch.device("cpu")) == trial_params(old, torch.device("cpu"))
    assert group_key(view) == group_key(composer.trial_config(cell, {**params, "model.learning_rate": 0.5}))
    with pytest.raises(TypeError):
        view.model.reg = 1.0


def test_a_trial_view_is_checked_by_the_value_rules(tmp_path):
    cell, composer = _cell(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.learning_rate.*> 0.*-0\.5"):
        composer.trial_config(cell, {"model.learning_rate": -0.5})


@pytest.mark.parametrize("params", [
    {"dataset.name": "cifar10"},  # tracking.experiment interpolates ${dataset.name}
    {"model.num_iters": 2.5},  # a float into an int field: the schema's conversion or refusal
    {"model.lr_decay_every": 5},  # into a null field
])
def test_what_only_omegaconf_can_answer_keeps_a_dictconfig(params, tmp_path):
    cell, composer = _cell(tmp_path, "dataset=image_folder")
    try:
        cfg = composer.trial_config(cell, params)
    except Exception:  # noqa: BLE001 -- refused by the schema, as before
        return
    assert isinstance(cfg, DictConfig)
