"""Storage and tracking URLs, checked before anything connects (no SQLAlchemy, MLflow or Optuna import).

``postgresql://`` and ``mysql://`` name no driver: SQLAlchemy then imports its default one
(psycopg from SQLAlchemy 2.1 on, psycopg2 before; mysqlclient), which may not be the installed
one. :func:`database_url` rewrites such a URL to the driver that is installed
(``postgresql+psycopg2://`` where only psycopg2 is), or refuses it with one line naming the
package to install. Messages never show a password.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .config import ConfigError

# dialect -> its drivers, SQLAlchemy's name, module and pip package (first: the one to install)
DRIVERS: Dict[str, List[Tuple[str, str, str]]] = {
    "postgresql": [("psycopg2", "psycopg2", "psycopg2-binary"), ("psycopg", "psycopg", "psycopg[binary]"),
                   ("pg8000", "pg8000", "pg8000")],
    "mysql": [("pymysql", "pymysql", "PyMySQL"), ("mysqldb", "MySQLdb", "mysqlclient"),
              ("mysqlconnector", "mysql.connector", "mysql-connector-python")],
}
DRIVERS["mariadb"] = DRIVERS["mysql"]
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
MLFLOW_SCHEMES = ("file", "http", "https", "databricks", "databricks-uc", "uc")
STORAGE_EXAMPLES = "sqlite:///FILE, postgresql://USER@HOST/DB, mysql://USER@HOST/DB, or null (in memory)"
TRACKING_EXAMPLES = "sqlite:///FILE, a folder, http(s)://HOST:PORT, postgresql://USER@HOST/DB"


def redact_url(url: Optional[str]) -> Optional[str]:
    """A storage/tracking URL without its password, for tags and logs."""
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


@functools.lru_cache(maxsize=None)
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing (mysql.connector)
        return False


@functools.lru_cache(maxsize=None)
def _entry_point_names(group: str) -> Tuple[str, ...]:
    from importlib.metadata import entry_points

    return tuple(e.name for e in entry_points(group=group))


def _default_driver(dialect: str) -> str:
    """The driver SQLAlchemy imports for a URL without one."""
    if dialect != "postgresql":
        return "mysqldb"
    from importlib.metadata import PackageNotFoundError, version

    try:
        major_minor = tuple(int(p) for p in version("sqlalchemy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "psycopg2"
    return "psycopg" if major_minor >= (2, 1) else "psycopg2"


def _check_driver(url: str, dialect: str, driver: str, option: str) -> str:
    drivers = DRIVERS.get(dialect)
    if not drivers:
        return url
    rest = url.split("://", 1)[1]
    if driver:
        module = next((m for name, m, _ in drivers if name == driver), None)
        if module is None or _installed(module):
            return url
        package = next(p for name, _, p in drivers if name == driver)
        raise ConfigError(f"{option} must name an installed database driver, got {redact_url(url)!r}\n"
                          f"{dialect}+{driver}:// needs the {driver} package: pip install '{package}'")
    default = _default_driver(dialect)
    if _installed(next((m for name, m, _ in drivers if name == default), default)):
        return url
    for name, module, _ in drivers:
        if _installed(module):
            return f"{dialect}+{name}://{rest}"
    raise ConfigError(f"{option} must name an installed database driver, got {redact_url(url)!r}\n"
                      f"no {dialect} driver is installed: pip install '{drivers[0][2]}' "
                      f"(or write {dialect}+DRIVER:// for another one)")


def _check_sqlite(url: str, option: str) -> None:
    path = url.split("://", 1)[1]
    if not path.startswith("/"):
        return  # sqlite:// (in memory)
    path = path[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    file = Path(path).expanduser()
    if not file.parent.is_dir():
        raise ConfigError(f"{option} must be a file in an existing folder, got {url!r} "
                          f"(no folder {file.parent})")


def database_url(url: str, option: str, examples: str = STORAGE_EXAMPLES) -> str:
    """``url`` as SQLAlchemy should get it (driver made explicit where needed); ConfigError
    naming ``option`` for an unknown scheme, a driver that is not installed or a missing folder."""
    scheme, sep, rest = str(url).partition("://")
    dialect, _, driver = scheme.partition("+")
    if dialect == "postgres":  # Heroku-style alias SQLAlchemy no longer accepts
        dialect, url = "postgresql", f"postgresql{scheme[len('postgres'):]}://{rest}"
    if not sep or not (dialect in DIALECTS or dialect in _entry_point_names("sqlalchemy.dialects")):
        raise ConfigError(f"{option} must be a database URL ({examples}), got {redact_url(str(url))!r}")
    if dialect == "sqlite":
        _check_sqlite(url, option)
        return url
    return _check_driver(url, dialect, driver, option)


def tracking_uri(uri: str, option: str = "tracking.uri") -> str:
    """An MLflow tracking URI, checked like :func:`database_url` where it names a database."""
    scheme, sep, _ = str(uri).partition("://")
    if not sep:
        return uri  # a local folder
    base = scheme.partition("+")[0]
    if base == "postgres" or base in DIALECTS:
        return database_url(uri, option, TRACKING_EXAMPLES)
    if scheme in MLFLOW_SCHEMES or scheme in _entry_point_names("mlflow.tracking_store"):
        return uri
    raise ConfigError(f"{option} must be an MLflow tracking URI ({TRACKING_EXAMPLES}), got {redact_url(uri)!r}")
