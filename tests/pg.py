"""Real services for tests: a fresh PostgreSQL database per test, and server processes
(`mlflow server`, `optuna-dashboard`) on free localhost ports.

PostgreSQL is the machine's server on 127.0.0.1:5432 (trust auth, user `postgres` or `root`);
LINEAR_SWEEPS_PG_URL=postgresql+psycopg2://USER[:PASSWORD]@HOST:PORT/DB names another one.
Without a reachable server the tests that use these fixtures skip with the reason, unless
LINEAR_SWEEPS_REQUIRE_POSTGRES=1 (set by .ci/run): then they fail.

Use from a test module with ``from pg import pg_server, pg_url  # noqa: F401`` (fixtures).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

REQUIRE_ENV = "LINEAR_SWEEPS_REQUIRE_POSTGRES"
URL_ENV = "LINEAR_SWEEPS_PG_URL"
DEFAULT_ADMIN_URLS = ("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                      "postgresql+psycopg2://root@127.0.0.1:5432/postgres")


class PgServer:
    """A PostgreSQL server we may create (and drop) databases on."""

    def __init__(self, admin_url: str):
        from sqlalchemy.engine import make_url

        self.admin_url = make_url(admin_url)
        self._created: List[str] = []

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg2 driver)."""
        return self.admin_url.set(drivername="postgresql+psycopg2", database=database).render_as_string(
            hide_password=False)

    def _connect(self):
        import psycopg2

        u = self.admin_url
        conn = psycopg2.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                                password=u.password, dbname=u.database or "postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, prefix: str = "linear_sweeps_test") -> str:
        """A new, empty database; returns its name (dropped by :meth:`drop_database` / close)."""
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        conn = self._connect()
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self._created.append(name)
        return name

    def drop_database(self, name: str) -> None:
        conn = self._connect()
        try:  # FORCE (PostgreSQL >= 13) ends connections a killed worker left behind
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
        if name in self._created:
            self._created.remove(name)

    def close(self) -> None:
        for name in list(self._created):
            self.drop_database(name)


def _reachable_server() -> tuple[Optional[PgServer], str]:
    candidates = [os.environ[URL_ENV]] if os.environ.get(URL_ENV) else list(DEFAULT_ADMIN_URLS)
    errors = []
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return None, "psycopg2 is not installed (pip install -e '.[postgres]')"
    for url in candidates:
        server = PgServer(url)
        try:
            server._connect().close()
            return server, ""
        except Exception as e:  # noqa: BLE001 - any failure means "not this one"
            errors.append(f"{server.admin_url.render_as_string(hide_password=True)}: {str(e).strip()}")
    return None, "no PostgreSQL server reachable (" + "; ".join(errors) + f"); set {URL_ENV} to use another"


@pytest.fixture(scope="session")
def pg_server():
    """The PostgreSQL server; skips (or fails under LINEAR_SWEEPS_REQUIRE_POSTGRES=1) without one."""
    server, reason = _reachable_server()
    if server is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """URL of a fresh database for this test, dropped after it."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


# ---------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, headers: Optional[Dict[str, str]] = None) -> tuple[int, bytes]:
    """(status, body) of a GET; the status of an HTTP error instead of raising."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Service:
    """A server process (own process group, output to a log file) with an HTTP readiness check."""

    def __init__(self, name: str, argv: Sequence[str], *, health_url: str, log_dir: Path,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None):
        self.name, self.argv, self.health_url = name, list(argv), health_url
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 90.0) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            try:
                if http_get(self.health_url, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} not ready at {self.health_url} after {timeout:.0f}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the service's process group (the server and the workers it forked) and wait."""
        if self.proc is None or self.proc.poll() is not None and not _group_alive(self.proc.pid):
            return
        _signal_group(self.proc.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.proc.poll() is None or _group_alive(self.proc.pid)):
            time.sleep(0.1)
        if self.proc.poll() is None or _group_alive(self.proc.pid):
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, timeout: float = 90.0) -> None:
        self.stop()
        self.start(timeout)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def mlflow_server_argv(backend_url: str, artifacts: Path, port: int, workers: int = 1) -> List[str]:
    """`mlflow server` as the compose file runs it: PostgreSQL backend, artifacts served by the server."""
    return ["mlflow", "server", "--backend-store-uri", backend_url, "--serve-artifacts",
            "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]


# The server's background job runner (huey consumers) is not needed and costs CPU on CI machines.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def start_mlflow_server(pg_server: PgServer, tmp: Path, port: Optional[int] = None) -> tuple[Service, str]:
    """A real `mlflow server` on a fresh database; returns (service, its database name)."""
    db = pg_server.create_database("linear_sweeps_mlflow")
    port = port or free_port()
    service = Service("mlflow", mlflow_server_argv(pg_server.url(db), tmp / "mlartifacts", port),
                      health_url=f"http://127.0.0.1:{port}/health", log_dir=tmp, env=MLFLOW_SERVER_ENV, cwd=tmp)
    service.port = port  # type: ignore[attr-defined]
    service.uri = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return service.start(), db
