"""docker-compose.yml, tested without a Docker engine.

The file is parsed with PyYAML and interpolated the way `docker compose` does (`${VAR:-default}`,
`${VAR:?message}`, `$$`); its structure is checked (healthchecks, volumes, 127.0.0.1 ports, no
password in the repo, every variable documented); then the very commands its services run,
taken from the file, run as local processes against the machine's PostgreSQL: the postgres
init script, the `mlflow` server command, a `worker` sweep against that server, the
`optuna-dashboard` command and the healthchecks. Only what a container changes is replaced:
service host names by 127.0.0.1, volume mount points by temporary folders, ports by free ones.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pg import Service, free_port, http_get, pg_server  # noqa: F401  (fixture)
from sweep_helpers import REPO, dataset

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
           "MLFLOW_TRACKING_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY")


# ------------------------------------------------------------------------ compose interpolation
class InterpolationError(ValueError):
    """A required variable (${VAR:?message}) is unset or empty."""


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^{}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (https://docs.docker.com/compose/how-tos/environment-variables/variable-interpolation/)."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset_or_empty else value
        if op in ("?", ":?"):
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VAR.sub(sub, text)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str]) -> Dict[str, Any]:
    """docker-compose.yml as `docker compose config` would see it with these variables."""
    return _walk(yaml.safe_load(COMPOSE.read_text()), env)


def compose_variables() -> set:
    """Every ${VAR} compose itself substitutes (not the $${VAR} left to the container's shell)."""
    found = set()

    def scan(node):
        if isinstance(node, str):
            found.update(m.group(1) or m.group(4) for m in _VAR.finditer(node) if m.group(0) != "$$")
        elif isinstance(node, (list, dict)):
            for x in node.values() if isinstance(node, dict) else node:
                scan(x)

    scan(yaml.safe_load(COMPOSE.read_text()))
    return found


def env_example() -> Dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return values


REQUIRED = {"POSTGRES_PASSWORD": "not-used-with-trust-auth"}


# ------------------------------------------------------------------------ structure
def test_compose_is_valid_yaml_with_the_services():
    services = load_compose(REQUIRED)["services"]
    assert {"postgres", "mlflow", "optuna-dashboard", "worker", "worker-gpu", "minio"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["minio"]["profiles"] == ["s3"]


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME $${X:-y}", env) == "v d  d $HOME ${X:-y}"
    assert interpolate("${SET:+on}${EMPTY:+on}", env) == "on"
    with pytest.raises(InterpolationError, match="EMPTY is missing a value: give it"):
        interpolate("${EMPTY:?give it}", env)


def test_stateful_services_have_named_volumes_and_healthchecks():
    compose = load_compose(REQUIRED)
    services, volumes = compose["services"], compose["volumes"]
    for name, mount in (("postgres", "/var/lib/postgresql/data"), ("mlflow", "/mlflow")):
        named = [v.split(":")[0] for v in services[name]["volumes"] if v.split(":")[1] == mount]
        assert named and named[0] in volumes, f"{name}: {mount} must be a named volume"
    for name in ("postgres", "mlflow", "optuna-dashboard", "minio"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("mlflow", "optuna-dashboard"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ports_bind_to_localhost_by_default():
    services = load_compose(REQUIRED)["services"]
    ports = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert ports
    for name, port in ports:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    lan = load_compose({**REQUIRED, "BIND_ADDRESS": "10.1.2.3"})["services"]
    assert lan["mlflow"]["ports"] == ["10.1.2.3:5000:5000"]


def test_no_password_in_the_repo():
    text = COMPOSE.read_text()
    secrets = re.findall(r"^\s*(\w*(?:PASSWORD|SECRET)\w*):\s+(.*)$", text, flags=re.M)
    assert len(secrets) >= 5
    for key, value in secrets:
        assert value.startswith("${"), f"docker-compose.yml sets {key} to a literal: {value}"
    userinfos = re.findall(r"://([^@/\n]*)@", text)  # user:password@ in URLs
    assert userinfos
    for userinfo in userinfos:
        assert re.fullmatch(r"\$\{POSTGRES_USER:-\w+\}:\$\{POSTGRES_PASSWORD:\?[^}]*\}", userinfo), userinfo
    examples = env_example()
    for key in SECRETS:
        assert examples.get(key, "") == "", f".env.example ships a value for {key}"
    assert "PASSWORD" not in (REPO / "Dockerfile").read_text().upper()


def test_required_secret_stops_compose_with_a_message():
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD .*set POSTGRES_PASSWORD in .env"):
        load_compose({})
    raw = COMPOSE.read_text()
    assert raw.count("${POSTGRES_PASSWORD") == raw.count("${POSTGRES_PASSWORD:?")


def test_env_example_documents_every_variable():
    used, documented = compose_variables(), set(env_example())
    assert used - documented == set(), "add these to .env.example"
    assert documented - used == set(), ".env.example lists variables docker-compose.yml does not read"


def test_worker_runs_the_sweep_against_the_shared_study_and_server():
    services = load_compose(REQUIRED)["services"]
    worker = services["worker"]
    assert worker["build"]["context"] == "." and (REPO / "Dockerfile").is_file()
    cmd = worker["command"]
    assert cmd[:2] == ["linear-sweep", "--multirun"]
    assert "hydra.sweeper.storage=${oc.env:OPTUNA_STORAGE}" in cmd
    assert "tracking.uri=http://mlflow:5000" in cmd
    assert worker["environment"]["OPTUNA_STORAGE"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in worker["environment"]["OPTUNA_STORAGE"]
    # Scalable (`--scale worker=4`): no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert {k: v["condition"] for k, v in worker["depends_on"].items()} == {
        "postgres": "service_healthy", "mlflow": "service_healthy"}
    assert worker["stop_signal"] == "SIGINT" and worker["init"] is True
    mlflow_cmd = "\n".join(services["mlflow"]["command"])
    assert "--serve-artifacts" in mlflow_cmd and "--backend-store-uri" in mlflow_cmd
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")


def test_gpu_profile_runs_one_worker_per_gpu():
    services = load_compose(REQUIRED)["services"]
    gpu, cpu = services["worker-gpu"], services["worker"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == "all"
    assert gpu["entrypoint"] == ["/app/docker/gpu-workers.sh"]
    assert gpu["command"] == cpu["command"]  # the same sweep, device=auto picks each worker's GPU
    assert "cu1" in gpu["build"]["args"]["TORCH_INDEX_URL"]
    assert os.access(REPO / "docker" / "gpu-workers.sh", os.X_OK)
    assert "COPY docker ./docker" in (REPO / "Dockerfile").read_text()


def test_gpu_workers_script_pins_each_worker_to_its_gpu():
    script = str(REPO / "docker" / "gpu-workers.sh")
    out = subprocess.run([script, "sh", "-c", 'echo "gpu=$CUDA_VISIBLE_DEVICES"'], env={**os.environ, "GPU_IDS": "0,1,2"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(re.findall(r"gpu=(\d)", out.stdout)) == ["0", "1", "2"]
    failing = subprocess.run([script, "sh", "-c", 'exit "$CUDA_VISIBLE_DEVICES"'], env={**os.environ, "GPU_IDS": "0,3"},
                             capture_output=True, text=True, timeout=30)
    assert failing.returncode == 3, "a failed worker must fail the container"
    # docker stop (SIGTERM) reaches every worker as SIGINT, the sweeper's clean interrupt.
    # 'ready' is written inside the try (a SIGINT right after it must land in the handler); one
    # os.write per line, so the two workers' lines cannot interleave (PYTHONUNBUFFERED splits print).
    code = ("import os, time\ntry:\n    os.write(1, b'ready\\n')\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    os.write(1, f\"interrupted {os.environ['CUDA_VISIBLE_DEVICES']}\\n\".encode())\n    raise SystemExit(130)")
    # As docker starts it: SIGINT at its default (a test process may run with it ignored, and an
    # ignored SIGINT is inherited by the shell and its workers, which then never stop).
    proc = subprocess.Popen([script, sys.executable, "-c", code], env={**os.environ, "GPU_IDS": "0,1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ready, seen = 0, []
    deadline = time.time() + 60
    while ready < 2 and time.time() < deadline:  # signal only once both workers handle SIGINT
        line = proc.stdout.readline()
        seen.append(line)
        ready += line.strip() == "ready"
    assert ready == 2, seen
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert sorted(re.findall(r"interrupted (\d)", out)) == ["0", "1"] and proc.returncode == 130, (out, err)


def test_mlflow_auth_switch_refuses_to_start_without_its_secrets():
    service = load_compose({**REQUIRED, "MLFLOW_AUTH": "basic-auth"})["services"]["mlflow"]
    assert service["environment"]["MLFLOW_AUTH"] == "basic-auth"
    env = {**_clean_env(), **service["environment"]}
    out = subprocess.run(service["command"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "needs MLFLOW_AUTH_ADMIN_PASSWORD" in out.stderr


def test_dockerfile_and_dockerignore():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'pip install ".[postgres,cluster]"' in dockerfile  # psycopg2, optuna-dashboard, submitit
    assert "USER sweeps" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".env", "data", "mlruns", "*.db"):
        assert entry in ignored, f".dockerignore should leave out {entry}"


# ------------------------------------------------------------------------ the services, run
def _clean_env() -> Dict[str, str]:
    """This process's environment without settings a container would not have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPTUNA_", "LINEAR_SWEEPS_"))}


def _localize(value: str, mounts: Mapping[str, Path], hosts: Mapping[str, str]) -> str:
    for container_path, local in mounts.items():
        if value == container_path or value.startswith(container_path + "/"):
            value = str(local) + value[len(container_path):]
    for host, local in hosts.items():
        value = value.replace(host, local)
    return value


def local_service(compose: Dict[str, Any], name: str, tmp: Path, hosts: Mapping[str, str],
                  extra_env: Mapping[str, str] = ()) -> tuple[list, Dict[str, str], Path]:
    """(argv, env, cwd) to run service ``name``'s command here: volume mount points become
    folders under ``tmp``, service addresses become local ones."""
    service = compose["services"][name]
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source in compose["volumes"]:
            mounts[target] = tmp / source
            mounts[target].mkdir(parents=True, exist_ok=True)
    env = {**_clean_env(), **{k: _localize(str(v), mounts, hosts) for k, v in service.get("environment", {}).items()},
           **dict(extra_env)}
    argv = [_localize(a, mounts, hosts) for a in service["command"]]
    cwd = Path(_localize(service.get("working_dir", str(tmp)), mounts, hosts))
    return argv, env, cwd


def healthcheck(compose, name: str, port: int, env: Mapping[str, str]) -> int:
    """Run a service's healthcheck command here (its in-container port replaced)."""
    test = compose["services"][name]["healthcheck"]["test"]
    inner = {"mlflow": 5000, "optuna-dashboard": 8080}[name]
    argv = [a.replace(f"127.0.0.1:{inner}", f"127.0.0.1:{port}") for a in test[1:]]
    if test[0] == "CMD-SHELL":
        argv = ["sh", "-c", argv[0]]
    return subprocess.run(argv, env=dict(env), capture_output=True, timeout=30).returncode


@pytest.fixture
def compose_stack(pg_server, tmp_path):  # noqa: F811
    """Compose variables for this machine: fresh Optuna and MLflow databases (the MLflow one
    created by the postgres service's own init script), hosts mapped to local addresses."""
    optuna_db = pg_server.create_database("linear_sweeps_compose_optuna")
    mlflow_db = optuna_db.replace("_optuna_", "_mlflow_")
    admin = pg_server.admin_url
    variables = {"POSTGRES_USER": admin.username, "POSTGRES_PASSWORD": admin.password or "not-used-with-trust-auth",
                 "OPTUNA_DB": optuna_db, "MLFLOW_DB": mlflow_db}
    compose = load_compose(variables)
    postgres = compose["services"]["postgres"]
    init_script = [v.split(":")[0] for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v][0]
    pg_env = {**_clean_env(), **postgres["environment"], "PGHOST": admin.host or "127.0.0.1",
              "PGPORT": str(admin.port or 5432), "PGPASSWORD": admin.password or ""}
    out = subprocess.run([str(REPO / init_script)], env=pg_env, capture_output=True, text=True, timeout=60)
    pg_server._created.append(mlflow_db)  # dropped with the others
    assert out.returncode == 0, out.stderr
    # The postgres healthcheck, as the container runs it (TCP on 127.0.0.1).
    check = postgres["healthcheck"]["test"]
    assert subprocess.run(["sh", "-c", check[1]], env=pg_env, timeout=30).returncode == 0
    hosts = {"@postgres:5432/": f"@{admin.host or '127.0.0.1'}:{admin.port or 5432}/"}
    yield compose, hosts, variables
    pg_server.drop_database(mlflow_db)
    pg_server.drop_database(optuna_db)


@pytest.mark.postgres
@pytest.mark.slow
def test_compose_services_run_as_local_processes(compose_stack, tmp_path):
    compose, hosts, variables = compose_stack
    services = []
    try:
        # mlflow: the service's own shell command, on a free port.
        port = free_port()
        argv, env, cwd = local_service(compose, "mlflow", tmp_path, hosts,
                                       {"MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"})
        server = Service("mlflow", argv, health_url=f"http://127.0.0.1:{port}/health", log_dir=tmp_path,
                         env=env, cwd=cwd)
        services.append(server.start())
        uri = f"http://127.0.0.1:{port}"
        assert healthcheck(compose, "mlflow", port, env) == 0
        # Workers call it by its compose name: that Host header must be allowed; others not.
        api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_get(api, headers={"Host": "mlflow:5000"})[0] == 200
        assert http_get(api, headers={"Host": "evil.example.com"})[0] in (400, 403)

        # worker: the service's sweep command, shrunk with a few extra overrides.
        images = dataset(tmp_path)
        worker_vars = {**variables, "SWEEP": "grid", "N_TRIALS": "2", "DATASET": "image_folder",
                       "DATASET_ROOT": str(images), "DEVICE": "cpu", "STUDY_NAME": "compose",
                       "EXPERIMENT": "compose", "HEARTBEAT_INTERVAL": "1"}
        argv, env, cwd = local_service(load_compose(worker_vars), "worker", tmp_path,
                                       {**hosts, "http://mlflow:5000": uri})
        argv += ["model.num_iters=60", "model.batch_size=16", "eval_every=20", "hydra.sweeper.progress_bar=false",
                 f"dataset.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        env["PYTHONPATH"] = str(REPO)
        out = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        storage = env["OPTUNA_STORAGE"]
        study = optuna.load_study(study_name="compose", storage=storage)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("compose")
        runs = client.search_runs([exp.experiment_id], "tags.`linear_sweeps.role` = 'trial'")
        assert sorted(r.info.status for r in runs) == ["FINISHED"] * 2
        # Artifacts were uploaded through the server into its volume.
        assert list((tmp_path / "mlflow-data" / "artifacts").rglob("weights.pt")), "no artifact in mlflow-data"

        # optuna-dashboard: its command serves the study from the same storage.
        dport = free_port()
        argv, env, cwd = local_service(compose, "optuna-dashboard", tmp_path, hosts,
                                       {"DASHBOARD_HOST": "127.0.0.1", "DASHBOARD_PORT": str(dport)})
        dashboard = Service("optuna-dashboard", argv, health_url=f"http://127.0.0.1:{dport}/api/studies",
                            log_dir=tmp_path, env=env, cwd=cwd)
        services.append(dashboard.start(timeout=60))
        assert healthcheck(compose, "optuna-dashboard", dport, env) == 0
        status, body = http_get(f"http://127.0.0.1:{dport}/api/studies")
        assert status == 200 and "compose" in [s["study_name"] for s in json.loads(body)["study_summaries"]]
    finally:
        for s in services:
            s.stop()


@pytest.mark.postgres
@pytest.mark.slow
def test_mlflow_basic_auth_switched_on_by_one_variable(compose_stack, tmp_path):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (Flask-WTF)")
    compose, hosts, variables = compose_stack
    secret = "s3cret-for-this-test-only"
    compose = load_compose({**variables, "MLFLOW_AUTH": "basic-auth", "MLFLOW_AUTH_ADMIN_PASSWORD": secret,
                            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key"})
    port = free_port()
    argv, env, cwd = local_service(compose, "mlflow", tmp_path, hosts,
                                   {"MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"})
    server = Service("mlflow-auth", argv, health_url=f"http://127.0.0.1:{port}/health", log_dir=tmp_path,
                     env=env, cwd=cwd)
    server.start()
    try:
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_get(api)[0] == 401
        token = base64.b64encode(f"admin:{secret}".encode()).decode()
        assert http_get(api, headers={"Authorization": f"Basic {token}"})[0] == 200
        # The auth store lives in the server's volume (its working directory).
        assert (tmp_path / "mlflow-data" / "basic_auth.db").is_file()
    finally:
        server.stop()
