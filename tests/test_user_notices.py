"""What users would want to know: a grid smaller than n_trials, progress while a long batch
trains off a terminal, and storage URLs without a driver suffix (postgresql://, mysql://).

(A model.batch_size above the training split is refused: tests/test_bad_inputs.py.)
"""
from __future__ import annotations

import logging
import time

import pytest

from pg import pg_server, pg_url  # noqa: F401  (fixtures)
from sweep_helpers import load_study, run_sweep
from sweeps import db_urls
from sweeps.config import ConfigError


# ------------------------------------------------------------------ the grid is smaller than n_trials
def test_grid_smaller_than_n_trials_is_said_once(tmp_path):
    work = tmp_path / "work"
    proc = run_sweep(work, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=5",
                     "model.learning_rate=choice(0.01,0.1)", "model.reg=choice(1e-4)")
    said = "the grid has 2 points: the study runs 2 trials, not 5"
    assert (proc.stdout + proc.stderr).count(said) == 1, proc.stdout[-3000:]
    assert len(load_study(work, "linear-sweeps-image_folder").trials) == 2


# ------------------------------------------------------------------ a line every few seconds while training
def test_ticker_prints_where_the_batch_is_until_it_is_trained(caplog):
    from sweeps.ticker import TrainingTicker

    step = {"now": 0}
    with caplog.at_level(logging.INFO, logger="sweeps.ticker"):
        with TrainingTicker("training 3 trials (svm)", 100, lambda: step["now"], every=0.05, enabled=True):
            for step["now"] in (20, 40, 60):
                time.sleep(0.12)
        n = len(caplog.records)
        time.sleep(0.15)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 3 and len(caplog.records) == n  # stops with the batch
    assert lines[-1].startswith("training 3 trials (svm): ") and lines[-1].endswith("iteration 60 of 100")


def test_ticker_is_off_on_a_terminal(monkeypatch, caplog):
    import sys

    from sweeps.ticker import TrainingTicker

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with caplog.at_level(logging.INFO, logger="sweeps.ticker"):
        with TrainingTicker("x", 10, lambda: 0, every=0.02):
            time.sleep(0.1)
    assert not caplog.records  # the progress bar shows progress there


def test_a_long_batch_prints_from_the_trainers_check_points(monkeypatch, caplog, tmp_path):
    """run_trials (sweeps and single runs alike) ticks while the stacked model trains."""
    from hydra import compose, initialize_config_dir

    import linear_models
    from imagegen import make_image_tree
    from sweeps import ticker
    from sweeps.app import config_dir
    from sweeps.runner import COMPLETED, TrialSpec, run_trials

    root = make_image_tree(tmp_path / "tree", train_per_class=10, test_per_class=2)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=image_folder", f"dataset.root={root}", "device=cpu",
                                           "model.num_iters=60", "model.batch_size=8", "eval_every=20",
                                           "dataset.cache_dir=false"])
    trainer = linear_models.train_linear_classifiers_batched

    def slow_trainer(*args, callback=None, **kwargs):  # a slow machine: 0.15 s per check point
        def slow(progress):
            time.sleep(0.15)
            return callback(progress)

        return trainer(*args, callback=slow, **kwargs)

    monkeypatch.setattr(linear_models, "train_linear_classifiers_batched", slow_trainer)
    monkeypatch.setattr(ticker, "TICK_SECONDS", 0.1)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="sweeps.ticker"):
        (out,) = run_trials([TrialSpec(cfg=cfg, number=0)], None)
    assert out.status == COMPLETED
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2, lines
    assert all(line.startswith("training 1 trial (svm): ") for line in lines)
    assert any(line.endswith(" of 60") and "iteration 0 " not in line for line in lines), lines


# ------------------------------------------------------------------ URLs without a driver suffix
def _installed(monkeypatch, *modules):
    monkeypatch.setattr(db_urls, "_installed", lambda module: module in modules)


@pytest.mark.parametrize("installed, url, expected", [
    (("psycopg2",), "postgresql://u:pw@db/optuna", "postgresql+psycopg2://u:pw@db/optuna"),
    (("psycopg2",), "postgres://u@db/optuna", "postgresql+psycopg2://u@db/optuna"),
    (("psycopg", "psycopg2"), "postgresql://u@db/optuna", "postgresql://u@db/optuna"),  # SQLAlchemy 2.1's default
    (("pymysql",), "mysql://u@db/optuna", "mysql+pymysql://u@db/optuna"),
    (("MySQLdb",), "mysql://u@db/optuna", "mysql://u@db/optuna"),
    ((), "postgresql+psycopg2://u@db/optuna", None),
    ((), "sqlite:///optuna.db", "sqlite:///optuna.db"),
])
def test_database_url_gets_the_installed_driver(monkeypatch, installed, url, expected):
    _installed(monkeypatch, *installed)
    monkeypatch.setattr(db_urls, "_default_driver", lambda dialect: "psycopg" if dialect == "postgresql" else "mysqldb")
    if expected is None:
        with pytest.raises(ConfigError, match=r"pip install 'psycopg2-binary'"):
            db_urls.database_url(url, "hydra.sweeper.storage")
    else:
        assert db_urls.database_url(url, "hydra.sweeper.storage") == expected


@pytest.mark.parametrize("dialect, package", [("postgresql", "psycopg2-binary"), ("mysql", "PyMySQL")])
def test_no_driver_installed_names_the_package_without_the_password(monkeypatch, dialect, package):
    _installed(monkeypatch)
    with pytest.raises(ConfigError) as e:
        db_urls.tracking_uri(f"{dialect}://user:secret@db/x")
    first, hint = str(e.value).splitlines()
    assert first == f"tracking.uri must name an installed database driver, got '{dialect}://user:***@db/x'"
    assert f"pip install '{package}'" in hint and "secret" not in str(e.value)


def test_postgresql_url_works_with_the_installed_psycopg2():
    """What SQLAlchemy gets loads a driver that is installed here (create_engine imports it)."""
    import sqlalchemy

    url = db_urls.database_url("postgresql://u@127.0.0.1:1/db", "hydra.sweeper.storage")
    sqlalchemy.create_engine(url).dispose()


def test_sweep_on_a_postgresql_url_without_driver(tmp_path, pg_url):  # noqa: F811
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    work = tmp_path / "work"
    run_sweep(work, f"hydra.sweeper.storage={plain}", "hydra.sweeper.n_trials=2")
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage=pg_url)
    assert summary.n_trials == 2
