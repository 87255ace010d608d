"""Every bad input: one clear line, exit 2, nothing created, in single runs and sweeps alike.

Each input runs through the real CLI (`python -m sweeps`, the QUICK settings of sweep_helpers)
in the modes it applies to. Each must exit 2 with at most two lines on stderr: the error line
``linear-sweep: error: ...`` naming the parameter (or the file) and the rule, then at most one
hint; no traceback; and the work folder stays empty: no mlflow.db (no experiment, no run), no
optuna.db (no study), no multirun/ sweep folder, no data/ folder. A single run's Hydra run
folder (outputs/, Hydra's log of the launch) is the one thing allowed there.

Config, search-space, option and URL errors are found before torch, Optuna and MLflow are
imported: one process per input, about a second each. Data errors need torch: those inputs
run through tests/bad_input_driver.py, which calls the same entry point (sweeps.app.main) for
every input in one process, so the heavy imports are paid once.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_helpers import REPO, dataset, sweep_command

BOTH, SINGLE, MULTI = ("single", "multi"), ("single",), ("multi",)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = closed_port()

# (id, overrides, modes, text the error line must contain)
CONFIG_CASES = [
    # config values
    ("lr-negative", ["model.learning_rate=-0.1"], BOTH, "model.learning_rate must be > 0, got -0.1"),
    ("reg-negative", ["model.reg=-1"], BOTH, "model.reg must be >= 0, got -1"),
    ("iters-zero", ["model.num_iters=0"], BOTH, "model.num_iters must be an integer >= 1, got 0"),
    ("batch-zero", ["model.batch_size=0"], BOTH, "model.batch_size must be an integer >= 1, got 0"),
    ("dtype", ["model.dtype=float16"], BOTH, "model.dtype must be one of ['float32', 'float64'], got 'float16'"),
    ("lr-decay", ["model.lr_decay=linear"], BOTH, "model.lr_decay must be one of ['none', 'step', 'cosine'], got 'linear'"),
    ("gamma", ["model.lr_decay_gamma=2"], BOTH, "model.lr_decay_gamma must be in (0, 1], got 2.0"),
    ("matmul-dtype", ["model.matmul_dtype=int8"], BOTH, "model.matmul_dtype must be null or one of"),
    ("iters-type", ["model.num_iters=abc"], BOTH, "model.num_iters must be an integer, got 'abc'"),
    ("batch-type", ["model.batch_size=2.5"], BOTH, "model.batch_size must be an integer, got '2.5'"),
    ("download-type", ["dataset.download=maybe"], BOTH, "dataset.download must be true or false, got 'maybe'"),
    ("eval-every", ["eval_every=0"], BOTH, "eval_every must be an integer >= 1, got 0"),
    ("val-ratio", ["dataset.validation_ratio=1.0"], BOTH, "dataset.validation_ratio must be in [0, 1), got 1.0"),
    ("num-train", ["dataset.num_train=0"], BOTH, "dataset.num_train must be null or an integer >= 1, got 0"),
    ("loss-every", ["tracking.loss_every=0"], BOTH, "tracking.loss_every must be an integer >= 1, got 0"),
    ("plots", ["tracking.diagnostic_plots=some"], BOTH, "tracking.diagnostic_plots must be one of ['best', 'all'], got 'some'"),
    ("test-eval", ["tracking.test_eval=none"], BOTH, "tracking.test_eval must be one of ['best', 'all'], got 'none'"),
    ("experiment", ["tracking.experiment=''"], BOTH, "tracking.experiment must be a non-empty name, got ''"),
    ("metric", ["metric=loss"], BOTH, "metric must be 'val_acc'"),
    ("device-option", ["device=tpu"], BOTH, "device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
    ("device-type", ["device.type=gpu"], BOTH, "device.type must be one of ['auto', 'cpu', 'cuda'], got 'gpu'"),
    ("loss-option", ["loss=hinge"], BOTH, "loss must be one of ['softmax', 'svm'], got 'hinge'"),
    ("dataset-option", ["dataset=imagenet"], BOTH, "dataset must be one of ['cifar10', 'image_folder'], got 'imagenet'"),
    ("image-root", ["dataset.root=/nonexistent/images"], BOTH, "dataset.root must be an existing image folder or .tar.gz"),
    ("syntax", ["model.learning_rate=("], BOTH, "model.learning_rate=("),
    ("interpolation", ["tracking.experiment=${nope}"], BOTH, "tracking.experiment: Interpolation key 'nope' not found"),
    ("env-missing", ["+cluster=shared"], MULTI, "Environment variable 'OPTUNA_STORAGE' not found"),
    ("sweep-in-single-run", ["model.learning_rate=interval(0.1,1.0)"], SINGLE, "requires --multirun"),
    # unknown keys, with and without +
    ("key", ["model.learnin_rate=0.5"], BOTH, "model.learnin_rate is not a key of model (did you mean model.learning_rate?)"),
    ("key-plus", ["+model.learnin_rate=0.5"], BOTH, "model.learnin_rate is not a key of model (did you mean model.learning_rate?)"),
    ("key-tracking", ["+tracking.experimnt=x"], BOTH, "tracking.experimnt is not a key of tracking (did you mean tracking.experiment?)"),
    ("key-dataset", ["+dataset.num_trian=10"], BOTH, "dataset.num_trian is not a key of dataset (did you mean dataset.num_train?)"),
    ("key-loss", ["+loss.nme=svm"], BOTH, "loss.nme is not a key of loss (did you mean loss.name?)"),
    ("key-device", ["+device.typ=cpu"], BOTH, "device.typ is not a key of device (did you mean device.type?)"),
    # tracking URLs
    ("tracking-scheme", ["tracking.uri=bogus://x"], BOTH, "tracking.uri must be an MLflow tracking URI"),
    ("tracking-driver", ["tracking.uri=mysql://u:secret@127.0.0.1/db"], BOTH,
     "tracking.uri must name an installed database driver, got 'mysql://u:***@127.0.0.1/db'"),
    ("tracking-folder", ["tracking.uri=sqlite:////nonexistent/dir/mlflow.db"], BOTH,
     "tracking.uri must be a file in an existing folder"),
    # sweeper options
    ("sampler", ["hydra.sweeper.sampler=bogus"], MULTI, "hydra.sweeper.sampler must be one of ['tpe', 'random'"),
    ("pruner", ["hydra.sweeper.pruner=bogus"], MULTI, "hydra.sweeper.pruner must be one of ['none', 'median'"),
    ("n-trials", ["hydra.sweeper.n_trials=0"], MULTI, "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
    ("n-trials-type", ["hydra.sweeper.n_trials=abc"], MULTI, "hydra.sweeper.n_trials must be an integer, got 'abc'"),
    ("grace-period", ["hydra.sweeper.grace_period=-5"], MULTI,
     "hydra.sweeper.grace_period must be null (3 x heartbeat_interval) or an integer > heartbeat_interval (1), got -5"),
    ("direction", ["hydra.sweeper.direction=up"], MULTI, "hydra.sweeper.direction must be 'maximize' or 'minimize', got 'up'"),
    ("failure-rate", ["hydra.sweeper.max_failure_rate=2"], MULTI, "hydra.sweeper.max_failure_rate must be in [0, 1], got 2.0"),
    ("option", ["+hydra.sweeper.n_trails=5"], MULTI, "hydra.sweeper.n_trails is not an option (did you mean hydra.sweeper.n_trials?)"),
    # storage URLs
    ("storage-scheme", ["hydra.sweeper.storage=bogus://x"], MULTI, "hydra.sweeper.storage must be a database URL"),
    ("storage-mysql", ["hydra.sweeper.storage=mysql://u@127.0.0.1/db"], MULTI,
     "hydra.sweeper.storage must name an installed database driver"),
    ("storage-driver", ["hydra.sweeper.storage=postgresql+pg8000://u@127.0.0.1/db"], MULTI,
     "hydra.sweeper.storage must name an installed database driver"),
    ("storage-folder", ["hydra.sweeper.storage=sqlite:////nonexistent/dir/optuna.db"], MULTI,
     "hydra.sweeper.storage must be a file in an existing folder"),
    # search space
    ("interval-order", ["model.learning_rate=interval(1.0,0.001)"], MULTI,
     "model.learning_rate: interval needs low < high, got interval(1.0, 0.001)"),
    ("space-key", ["model.lerning_rate=interval(0.1,1.0)"], MULTI,
     "model.lerning_rate is not a key of model (did you mean model.learning_rate?)"),
    ("grid-continuous", ["hydra.sweeper.sampler=grid"], MULTI,
     "model.learning_rate: the grid sampler needs choice(...) or range(...)"),
    ("space-corner", ["model.learning_rate=interval(-1.0,1.0)"], MULTI,
     "search space model.learning_rate allows an invalid value: model.learning_rate must be > 0, got -1.0"),
    ("log-zero", ["model.reg=tag(log,interval(0.0,1.0))"], MULTI, "model.reg: a log interval needs low > 0"),
    ("range-empty", ["model.num_iters=range(10,5)"], MULTI, "model.num_iters: range(10, 5, 1) is empty"),
    ("space-choice", ["model.lr_decay=choice(none,linear)"], MULTI,
     "search space model.lr_decay allows an invalid value: model.lr_decay must be one of"),
    ("optimizer-option", ["optimizer=adam"], BOTH,
     "optimizer must be one of ['asgd', 'momentum', 'nesterov', 'sgd'], got 'adam'"),
    ("momentum", ["optimizer=nesterov", "optimizer.momentum=1.0"], BOTH, "optimizer.momentum must be in [0, 1), got 1.0"),
    ("average-start", ["optimizer=asgd", "optimizer.average_start=-0.5"], BOTH,
     "optimizer.average_start must be in [0, 1), got -0.5"),
    ("preprocess-option", ["preprocess=whiten"], BOTH,
     "preprocess must be one of ['mean', 'pca', 'standardize', 'zca'], got 'whiten'"),
    ("epsilon", ["preprocess=zca", "preprocess.epsilon=-1"], BOTH, "preprocess.epsilon must be >= 0, got -1"),
    ("components", ["preprocess=pca", "preprocess.components=0"], BOTH,
     "preprocess.components must be an integer >= 1, got 0"),
    ("augment-name", ["augment.name=rotate"], BOTH, "augment.name must be one of ['none', 'flip'], got 'rotate'"),
    ("condition-grid", ["sweep=accuracy", "hydra.sweeper.sampler=grid"], MULTI,
     "hydra.sweeper.conditions (optimizer.momentum, optimizer.average_start, preprocess.epsilon) need a sampler"),
    ("condition-values", ["sweep=accuracy", "optimizer=choice(sgd,asgd)"], MULTI,
     "hydra.sweeper.conditions.optimizer.momentum: optimizer never takes momentum, nesterov"),
    ("grid-option", ["loss=svm,sofmax"], MULTI, "loss must be one of ['softmax', 'svm'], got 'sofmax' (did you mean softmax?)"),
]


def _cases(table):
    return [pytest.param(cid, overrides, mode, text, id=f"{cid}-{mode}")
            for cid, overrides, modes, text in table for mode in modes]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    dataset(root)  # the shared QUICK image tree (root/images)
    return root


def assert_refused(rc: int, stderr: str, expected: str, workdir: Path, mode: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert 1 <= len(lines) <= 2, stderr[-3000:]  # the error line, at most one hint
    assert lines[0].startswith("linear-sweep: error: "), stderr
    assert re.search(expected, lines[0]), (expected, lines[0])
    left = sorted(p.name for p in workdir.iterdir())
    assert left == ([] if mode == "multi" else [n for n in left if n == "outputs"]), left


@pytest.mark.parametrize("cid, overrides, mode, text", _cases(CONFIG_CASES))
def test_bad_config_input(base, cid, overrides, mode, text):
    workdir = base / f"{cid}-{mode}"
    args, env = sweep_command(workdir, *overrides, multirun=mode == "multi")
    env.pop("OPTUNA_STORAGE", None)
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert_refused(proc.returncode, proc.stderr, re.escape(text), workdir, mode)


# ------------------------------------------------------------------ data errors (one process for all)
def _broken_tree(base: Path, name: str, breakage) -> Path:
    from imagegen import make_image_tree

    root = make_image_tree(base / "trees" / name, train_per_class=6, test_per_class=2)
    breakage(root)
    return root


def _mixed_sizes(root: Path) -> None:
    from PIL import Image

    Image.new("RGB", (5, 5)).save(root / "test" / "cat" / "0001.png")


def _empty_class(root: Path) -> None:
    for f in (root / "test" / "dog").iterdir():
        f.unlink()


def data_cases(base: Path):
    """(id, overrides, modes, regex of the error line)."""
    trees = base / "trees"
    trees.mkdir(exist_ok=True)
    (trees / "garbage.tar.gz").write_bytes(b"not a tar")
    (trees / "no-train").mkdir(exist_ok=True)
    cifar_bad = trees / "cifar-bad"
    cifar_bad.mkdir(exist_ok=True)
    (cifar_bad / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    mixed = _broken_tree(base, "mixed", _mixed_sizes)
    empty = _broken_tree(base, "empty", _empty_class)
    cifar = ["dataset=cifar10", "dataset.root=data/cifar10", "dataset.download=true"]  # the default root
    url = f"http://127.0.0.1:{PORT}/cifar-10-python.tar.gz"
    return [
        ("batch-above-split", ["model.batch_size=1000"], BOTH,
         r"model\.batch_size must be <= the training split \(\d+ images\), got 1000"),
        ("space-batch-above-split", ["model.batch_size=choice(16,1000)"], MULTI,
         r"the search space's largest model\.batch_size must be <= the training split \(\d+ images\), got 1000"),
        ("cifar-missing", ["dataset=cifar10", f"dataset.root={trees / 'none'}", "dataset.download=false"], BOTH,
         re.escape(f"{trees / 'none'}: CIFAR-10 is not there and dataset.download=false")),
        ("download-refused", cifar + [f"dataset.url={url}"], BOTH,
         re.escape(f"data/cifar10: CIFAR-10 is not there, and downloading it from {url} failed (") + ".*refused"),
        ("download-missing-file", cifar + ["dataset.url=file:///nonexistent/cifar-10-python.tar.gz"], BOTH,
         r"data/cifar10: CIFAR-10 is not there, and downloading it from file:///nonexistent/\S+ failed \(.*No such file"),
        ("cifar-corrupt", ["dataset=cifar10", f"dataset.root={cifar_bad}"], BOTH,
         re.escape(str((cifar_bad / "cifar-10-python.tar.gz").resolve())) + " has md5 [0-9a-f]+, expected"),
        ("not-an-archive", [f"dataset.root={trees / 'garbage.tar.gz'}"], BOTH,
         re.escape(str((trees / "garbage.tar.gz").resolve())) + " is neither a folder nor a tar archive"),
        ("no-train-folder", [f"dataset.root={trees / 'no-train'}"], BOTH,
         re.escape(str((trees / "no-train" / "train").resolve()))),
        ("mixed-sizes", [f"dataset.root={mixed}"], BOTH,
         re.escape(str((mixed / "test" / "cat" / "0001.png").resolve())) + r": image is 5x5 \(H x W\)"),
        ("empty-class", [f"dataset.root={empty}"], BOTH,
         re.escape(str((empty / "test" / "dog").resolve())) + ": class folder has no PNG or JPEG images"),
    ]


SHARED_FIXTURES = ("data_results",)  # its tests run on one xdist worker (tests/conftest.py)


@pytest.fixture(scope="module")
def data_results(base):
    """Every data case in both modes, run by tests/bad_input_driver.py in one process."""
    cases, keys = [], []
    for cid, overrides, modes, pattern in data_cases(base):
        for mode in modes:
            workdir = base / f"data-{cid}-{mode}"
            args, env = sweep_command(workdir, *overrides, f"dataset.cache_dir={workdir.parent / ('cache-' + cid)}",
                                      multirun=mode == "multi")
            env = {k: v for k, v in env.items() if k in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
            cases.append({"argv": args[3:], "cwd": str(workdir), "env": env})
            keys.append((cid, mode, pattern, workdir))
    (base / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "bad_input_driver.py"), str(base / "cases.json"),
                           str(base / "results.json")], cwd=base, env={**_plain_env(), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((base / "results.json").read_text())
    return {(cid, mode): (pattern, workdir, r) for (cid, mode, pattern, workdir), r in zip(keys, results)}


def _plain_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LINEAR_SWEEPS_DATA")}


DATA_IDS = [("batch-above-split", BOTH), ("space-batch-above-split", MULTI), ("cifar-missing", BOTH),
            ("download-refused", BOTH), ("download-missing-file", BOTH), ("cifar-corrupt", BOTH),
            ("not-an-archive", BOTH), ("no-train-folder", BOTH), ("mixed-sizes", BOTH), ("empty-class", BOTH)]


@pytest.mark.parametrize("cid, mode", [pytest.param(c, m, id=f"{c}-{m}") for c, modes in DATA_IDS for m in modes])
def test_bad_data_input(data_results, cid, mode):
    pattern, workdir, result = data_results[(cid, mode)]
    assert_refused(result["rc"], result["stderr"], pattern, workdir, mode)


def test_the_table_covers_forty_inputs(base):
    assert len(CONFIG_CASES) + len(data_cases(base)) >= 40
    assert [c for c, *_ in data_cases(base)] == [c for c, _ in DATA_IDS]


# ------------------------------------------------------------------ the default main job, offline
@pytest.mark.parametrize("mode, url", [("multi", f"http://127.0.0.1:{PORT}/cifar-10-python.tar.gz"),
                                       ("single", "file:///nonexistent/cifar-10-python.tar.gz")],
                         ids=["multirun-refused-port", "single-missing-file"])
def test_default_main_job_offline_says_one_line_and_creates_nothing(tmp_path, mode, url):
    """`linear-sweep --multirun` with its defaults (CIFAR-10 into data/cifar10, downloaded once,
    ./mlflow.db, ./optuna.db) where the download cannot work: one line and a hint, exit 2."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LINEAR_SWEEPS_DATA")}
    env.update({"PYTHONPATH": str(REPO), "LINEAR_SWEEPS_CACHE": str(tmp_path / "cache")})
    work = tmp_path / "work"
    work.mkdir()
    args = [sys.executable, "-m", "sweeps"] + (["--multirun"] if mode == "multi" else [])
    args += ["device=cpu", f"dataset.url={url}", f"hydra.sweep.dir={work / 'multirun'}",
             f"hydra.run.dir={work / 'outputs'}"]
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    expected = re.escape(f"data/cifar10: CIFAR-10 is not there, and downloading it from {url} failed (")
    assert_refused(proc.returncode, proc.stderr, expected, work, mode)
    assert proc.stderr.splitlines()[-1].startswith("offline, pass a local copy: dataset.root=PATH")


def test_linear_compare_says_its_errors_the_same_way(tmp_path, capsys):
    from sweeps import compare

    assert compare.main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "r")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("linear-compare: error: "), lines
    assert "no MLflow store" in lines[0] and not (tmp_path / "none.db").exists()
