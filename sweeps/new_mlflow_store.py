"""A new embedded MLflow store, copied from an empty one that MLflow migrated once per release.

MLflow makes a new SQLite store by running each of its schema migrations in turn, about 1.8 s
on every new ``mlflow.db``, before a launch on fresh stores can create its studies' parent runs.
The first new store of an MLflow release on this machine is made that way and copied, emptied
of its Default experiment, into the cache folder (``$LINEAR_SWEEPS_CACHE`` or
``~/.cache/linear-sweeps``); every later new store starts as a copy of that template. Opening
the copy, MLflow finds its schema at head and creates the Default experiment, as it does in a
store it has just migrated (tests/test_mlflow_adapter.py compares the two).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
from importlib.metadata import version
from pathlib import Path
from typing import Optional

from linear_models.data.cache import default_cache_dir

from . import adapter

log = logging.getLogger(__name__)


def mlflow_client(uri: str):
    """``MlflowClient(uri)``, its store opened; a new SQLite store is seeded from the template, or
    becomes it."""
    from mlflow.tracking import MlflowClient

    path = new_sqlite_file(uri)
    seeded = path is not None and seed_from_template(path)
    client = MlflowClient(tracking_uri=uri)
    if path is not None and not seeded:
        client.search_experiments(max_results=1)  # MLflow migrates the new store
        keep_as_template(path)
    return client


def new_sqlite_file(uri: Optional[str]) -> Optional[Path]:
    """The file of a ``sqlite:///`` URI that does not exist yet (relative to the working folder,
    as SQLAlchemy reads it), or None: another kind of store, in memory, or a file already there."""
    prefix = "sqlite:///"
    if not uri or not uri.startswith(prefix):
        return None
    name = uri[len(prefix):].split("?", 1)[0]
    if not name or name == ":memory:":
        return None
    path = Path(name)
    return None if path.exists() or not path.parent.is_dir() else path


def template_path() -> Path:
    """The empty store of the installed MLflow release, in the cache folder."""
    return default_cache_dir() / f"mlflow-{version('mlflow')}-empty-store.db"


def seed_from_template(path: Path) -> bool:
    """Create ``path`` as a copy of the template; False if there is none yet (or ``path`` appeared
    meanwhile: another process made the store first)."""
    template = template_path()
    if not template.is_file():
        return False
    try:
        tmp = _new_file(path.parent, path.name)
        try:
            _copy_database(template, Path(tmp))
            os.link(tmp, path)  # no-clobber: a store another process made meanwhile stays
            return True
        finally:
            os.unlink(tmp)
    except FileExistsError:
        return False
    except (OSError, sqlite3.Error) as e:  # MLflow makes the store itself (and names what is wrong)
        log.debug("new MLflow store %s not copied from %s (%s)", path, template, e)
        return False


def keep_as_template(path: Path) -> None:
    """Copy ``path`` (a store MLflow has just migrated in this process) into the template, unless
    there is one already or the store holds more than a new store does. Never fails the launch."""
    template = template_path()
    if template.is_file():
        return
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_file(template.parent, template.name)
        try:
            _copy_database(path, Path(tmp))
            if adapter.make_store_template(Path(tmp)):
                os.replace(tmp, template)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, sqlite3.Error) as e:
        log.debug("no MLflow store template kept (%s): new stores keep running MLflow's migrations", e)


def _new_file(folder: Path, name: str) -> str:
    """An empty file beside ``folder/name``, with the permissions the umask gives new files
    (``tempfile.mkstemp`` makes them 0600, unlike the stores SQLite creates)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def _copy_database(source: Path, target: Path) -> None:
    """SQLite's backup API, not a file copy: in WAL mode the last commits may sit in ``-wal``."""
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one file, whatever the source's mode
