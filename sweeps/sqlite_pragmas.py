"""SQLite settings for this process's embedded stores (MLflow's and Optuna's)."""
from __future__ import annotations

_SQLITE_TUNED = False


def tune_sqlite() -> None:
    """WAL journal and synchronous=NORMAL for this process's SQLite connections (MLflow's and
    Optuna's embedded stores): readers don't block the writer, and a commit costs no fsync.
    A crashed process loses nothing it committed; only a power cut can drop the last commits."""
    global _SQLITE_TUNED
    if _SQLITE_TUNED:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _SQLITE_TUNED = True
