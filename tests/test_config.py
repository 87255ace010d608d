"""Configs compose, the plugin is discovered, and bad values are refused with clear messages."""
import os
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import ValidationError

from sweeps.app import config_dir
from sweeps.config import ConfigError, register_configs, validate_config

register_configs()

GROUP_OPTIONS = {
    "model": ["linear"],
    "loss": ["svm", "softmax"],
    "device": ["auto", "cpu", "cuda"],
    "dataset": ["cifar10", "image_folder"],
    "sweep": ["tpe", "random", "grid", "accuracy"],
}


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_sweeper_plugin_is_discovered():
    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.linear_sweeps_sweeper.linear_optuna_sweeper.LinearOptunaSweeper" in names


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_config_group_composes(group, option, tmp_path):
    cfg = _compose(f"{group}={option}", f"dataset.root={tmp_path}", hydra=True)
    assert cfg.hydra.sweeper._target_.endswith("LinearOptunaSweeper")
    if group == "loss":
        assert cfg.loss.name == option
        assert cfg.model.learning_rate == {"svm": 1e-2, "softmax": 1e-1}[option]
    if group == "sweep":
        assert cfg.hydra.sweeper.params["model.learning_rate"]
        assert cfg.hydra.sweeper.sampler == {"accuracy": "tpe"}.get(option, option)
    if group == "device" and option != "cuda":
        validate_config(cfg)


def test_defaults_are_embedded_stores():
    cfg = _compose(hydra=True)
    assert cfg.tracking.uri.startswith("sqlite:///") or cfg.tracking.uri.startswith("http")
    assert cfg.hydra.sweeper.storage == "sqlite:///optuna.db"
    assert cfg.dataset.name == "cifar10" and cfg.dataset.download is True
    assert cfg.model.num_iters == 1500 and cfg.model.batch_size == 200


@pytest.mark.parametrize("override", ["model.num_iters=abc", "model.learnin_rate=0.1", "model.batch_size=2.5"])
def test_wrong_type_or_unknown_key_fails_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose(override)


@pytest.mark.parametrize("override,message", [
    ("model.learning_rate=-0.1", r"model.learning_rate must be > 0, got -0.1"),
    ("model.reg=-1", r"model.reg must be >= 0, got -1"),
    ("model.batch_size=0", r"model.batch_size must be an integer >= 1, got 0"),
    ("model.dtype=float16", r"model.dtype must be one of \['float32', 'float64'\], got 'float16'"),
    ("model.lr_decay=linear", r"model.lr_decay must be one of \['none', 'step', 'cosine'\], got 'linear'"),
    ("device=cuda", r"device.type must be 'cpu' or 'auto' on a machine without CUDA, got 'cuda'"),
    ("dataset.validation_ratio=1.0", r"dataset.validation_ratio must be in \[0, 1\), got 1.0"),
    ("eval_every=0", r"eval_every must be an integer >= 1, got 0"),
    ("model.matmul_dtype=int8", r"model.matmul_dtype must be null or one of \['auto', 'bfloat16', .*\], got 'int8'"),
    ("tracking.diagnostic_plots=some", r"tracking.diagnostic_plots must be one of \['best', 'all'\], got 'some'"),
])
def test_bad_values_are_named(override, message, tmp_path):
    import torch

    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _compose(override, f"dataset.root={tmp_path}")
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_image_folder_root_must_exist(tmp_path):
    cfg = _compose("dataset=image_folder", f"dataset.root={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match=r"dataset.root must be an existing image folder or .tar.gz"):
        validate_config(cfg)


def test_config_found_in_installed_copy(tmp_path):
    """A non-editable install carries conf/ as sweeps/conf (pyproject package-dir mapping)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(config_dir()).parent
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                           "--target", str(target), str(repo)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (target / "sweeps" / "conf" / "config.yaml").is_file()
    assert (target / "sweeps" / "conf" / "sweep" / "grid.yaml").is_file()
    assert (target / "hydra_plugins" / "linear_sweeps_sweeper" / "linear_optuna_sweeper.py").is_file()
    out = subprocess.run([sys.executable, "-c", "import sweeps.app as a; print(a.config_dir())"], cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(target / "sweeps" / "conf")


def test_importing_sweeps_turns_mlflow_telemetry_off_unless_asked():
    """MLflow 3 starts telemetry threads at import that post usage events over the network."""
    import subprocess
    import sys

    probe = ("import sweeps, mlflow\n"
             "from mlflow.telemetry.client import get_telemetry_client\n"
             "print(get_telemetry_client() is None)\n")
    # Without the CI/pytest markers MLflow itself checks, so that only our default decides.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS")}
    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "True", off.stderr[-2000:]
    # An explicit choice wins (checked without starting a client: nothing may be sent).
    probe_opt_in = "import os, sweeps\nprint(os.environ['MLFLOW_DISABLE_TELEMETRY'])\n"
    on = subprocess.run([sys.executable, "-c", probe_opt_in], env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
                        capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "false"


def test_matmul_dtype_auto_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    import torch

    from sweeps import data

    cfg = _compose()
    assert cfg.model.matmul_dtype == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(data, "cpu_has_native_bf16", lambda: native)
        assert data.matmul_dtype(cfg.model, cpu) == (torch.bfloat16 if native else None)
        assert data.matmul_dtype_name(cfg.model, cpu) == ("bfloat16" if native else None)
        assert data.matmul_dtype(cfg.model, cuda) is None  # launch-bound there: no conversion kernels
    monkeypatch.setattr(data, "cpu_has_native_bf16", lambda: True)
    assert data.matmul_dtype(_compose("model.dtype=float64").model, cpu) is None  # float64 asked: kept exact
    assert data.matmul_dtype(_compose("model.matmul_dtype=null").model, cpu) is None
    assert data.matmul_dtype(_compose("model.matmul_dtype=bfloat16").model, cuda) == torch.bfloat16


def test_cpu_bf16_detection_reads_the_cpu_flags():
    from sweeps.data import cpu_has_native_bf16

    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        assert cpu_has_native_bf16() is False
        return
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


def test_prefetch_loads_the_launch_data_once_for_the_study(tmp_path):
    from imagegen import make_image_tree

    from sweeps import data

    root = make_image_tree(tmp_path / "tree", train_per_class=6, test_per_class=2)
    cfg = _compose("dataset=image_folder", f"dataset.root={root}", "device=cpu", "dataset.cache_dir=false")
    overrides = ["loss=svm,softmax", f"dataset.root={root}"]  # an outer grid over losses: same data
    thread = data.prefetch_data(cfg, overrides)
    assert thread is not None
    thread.join(timeout=60)
    key = (data.dataset_key(cfg.dataset), cfg.model.dtype, "cpu")
    prefetched = data._CACHE[key]
    assert data.load_data(cfg.dataset, cfg.model.dtype, data.resolve_device("cpu")) is prefetched  # reused


@pytest.mark.parametrize("overrides", [["dataset=cifar10,image_folder"], ["model.dtype=float32,float64"],
                                       ["device=cpu,auto"], ["+dataset.num_train=10,20"]])
def test_prefetch_skips_launches_that_sweep_the_data(tmp_path, overrides):
    from sweeps import data

    cfg = _compose("dataset=image_folder", f"dataset.root={tmp_path}", "device=cpu")
    assert data.prefetch_data(cfg, overrides) is None


def test_prefetch_skips_an_invalid_config_and_never_downloads(tmp_path, monkeypatch):
    import urllib.request

    from sweeps import data

    # Recorded, not failed where it happens: pytest.fail in the prefetch thread would only warn.
    downloads = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: downloads.append(a) or pytest.fail("download"))
    assert data.prefetch_data(_compose("model.learning_rate=-1", "device=cpu")) is None
    missing = _compose(f"dataset.root={tmp_path / 'none'}", "device=cpu", "dataset.download=true")
    thread = data.prefetch_data(missing)  # valid config, files absent: the thread gives up quietly
    assert thread is not None
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert downloads == [], f"prefetch tried a download: {downloads}"
    assert not any(k[0] == data.dataset_key(missing.dataset) for k in data._CACHE)
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("overrides", [(), ("optimizer=momentum", "preprocess=zca", "loss=svm", "dataset=image_folder")])
def test_a_runs_config_yaml_loads_back_as_the_resolved_config(overrides, tmp_path):
    from sweeps.recording import config_yaml

    cfg = _compose(*overrides, f"dataset.cache_dir={tmp_path}", "tracking.experiment='a: b - ${seed} #x'")
    text = config_yaml(cfg)
    assert OmegaConf.create(text) == OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    assert OmegaConf.create(text).tracking.experiment == f"a: b - {cfg.seed} #x"


def test_the_loop_reuses_the_preflights_cell_compositions():
    """Each outer-grid cell is composed by Hydra once per launch: the preflight's composer
    (which checked every cell) is the loop's, and a second look at the cells composes nothing."""
    from hydra.core.global_hydra import GlobalHydra

    from sweeps.engine.preflight import check_launch
    from sweeps.search_space import plan_sweep

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        config = compose("config", overrides=["seed=3"], return_hydra_config=True)
        with open_dict(config):  # as `--multirun loss=svm,softmax seed=3` has it
            config.hydra.overrides.task = ["loss=svm,softmax", "seed=3"]
        loader = GlobalHydra.instance().config_loader()
        calls = []
        real = loader.load_sweep_config
        loader.load_sweep_config = lambda root, overrides: calls.append(list(overrides)) or real(root, overrides)
        options = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        options.pop("_target_", None)
        composer = check_launch(options, loader, config)
        assert sorted(calls) == [["seed=3", "loss=softmax"], ["seed=3", "loss=svm"]]
        plan = plan_sweep(options["params"], ["loss=svm,softmax", "seed=3"])
        cells = composer.cells(plan)
    assert len(calls) == 2, calls
    assert [c.overrides for c in cells] == [["loss=svm"], ["loss=softmax"]]
    assert [c.base.loss.name for c in cells] == ["svm", "softmax"]
    assert all(c.base.seed == 3 for c in cells)
