"""The CLI finds the `linear_optuna` sweeper however linear-sweeps is installed.

Hydra discovers plugins by scanning the folders of the ``hydra_plugins`` namespace package. A
default (PEP 660) editable install maps the package through an import hook that this scan
cannot list, and `linear-sweep --multirun` failed with "Could not find
'hydra/sweeper/linear_optuna'"; sweeps.app now registers the sweeper itself. Each case installs
a copy of the package into a fresh virtual environment (``--no-deps --no-build-isolation``: the
machine's torch, Hydra, MLflow... are used, nothing is downloaded) and runs the installed
`linear-sweep` from a folder outside any checkout, so no `hydra_plugins/` folder is on the path.

The environment sees the machine's site-packages through a ``.pth`` line naming that folder
rather than ``venv --system-site-packages``: the latter also runs that folder's own ``.pth``
files, and a compat editable install there (.ci/run's, or another checkout's) would put a
checkout with its `hydra_plugins/` folder back on the path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sweep_helpers import QUICK, REPO, dataset

pytestmark = pytest.mark.slow  # 25-30 s on 2 cores: two installs, two 1-trial sweeps

PACKAGE_FILES = ["pyproject.toml", "README.md", "sweeps", "linear_models", "hydra_plugins", "conf"]
TARGET = "hydra_plugins.linear_sweeps_sweeper.linear_optuna_sweeper.LinearOptunaSweeper"


def source_copy(dest: Path) -> Path:
    """The package's files (as pyproject.toml names them): the build writes there, not here."""
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    """A virtual environment that imports the machine's packages but runs none of their .pth files."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    machine = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site, "_machine_site_packages.pth").write_text("".join(f"{p}\n" for p in machine))
    return python


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, **extra}


def run(args, cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("mode", ["editable", "regular"])
def test_installed_cli_finds_the_sweeper(mode, tmp_path, images):
    src = source_copy(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    install = ["-e", src] if mode == "editable" else [src]  # regular: pip builds a wheel and installs it
    proc = run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *install], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    # The installed copy is the one imported; no checkout's hydra_plugins/ folder is on the path.
    probe = ("import hydra_plugins, sweeps, hydra_plugins.linear_sweeps_sweeper as p\n"
             "print(sweeps.__file__); print(p.__file__)\n"
             "print(*[str(d) for d in hydra_plugins.__path__], sep='\\n')\n")
    proc = run([python, "-c", probe], outside)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps_file, plugin_file, *namespace = proc.stdout.splitlines()
    home = src if mode == "editable" else tmp_path / "venv"
    assert Path(sweeps_file).is_relative_to(home) and Path(plugin_file).is_relative_to(home), proc.stdout
    assert not any(Path(d).is_relative_to(REPO) for d in namespace), namespace
    if mode == "editable":  # what the registration is for: the scanned folders do not hold the plugin
        assert not any((Path(d) / "linear_sweeps_sweeper").is_dir() for d in namespace), namespace

    cli = tmp_path / "venv" / "bin" / "linear-sweep"
    # The config group is there (ConfigStore) ...
    proc = run([cli, "--cfg", "hydra"], outside)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"_target_: {TARGET}" in proc.stdout
    # ... and the sweeper class too (Plugins): a real 1-trial sweep.
    proc = run([cli, "--multirun", *QUICK, f"dataset.root={images}", "dataset.cache_dir=false",
                "hydra.sweeper.n_trials=1", "hydra.sweeper.progress_bar=false", "tracking.log_images=false"],
               outside, MLFLOW_TRACKING_URI=f"sqlite:///{outside / 'mlflow.db'}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    assert "trials: 1 complete, 0 pruned, 0 failed" in proc.stdout, proc.stdout[-2000:]
    assert (outside / "optuna.db").is_file()
