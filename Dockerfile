# syntax=docker/dockerfile:1
# One image for every Python service of docker-compose.yml: the sweep workers, the MLflow
# tracking server and optuna-dashboard (the same versions of optuna/mlflow everywhere, with the
# PostgreSQL driver that the upstream images lack).
#   docker build -t linear-sweeps .                                   # CPU torch
#   docker build -t linear-sweeps:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# boto3: artifacts in S3/MinIO (compose profile s3). Empty to leave it out.
ARG EXTRA_PACKAGES="boto3"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

WORKDIR /app
# torch first, from the index that matches the hardware (a bare `torch` pulls the CUDA build).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY linear_models ./linear_models
COPY sweeps ./sweeps
COPY hydra_plugins ./hydra_plugins
COPY conf ./conf
# mlflow[auth]: Flask-WTF, which `mlflow server --app-name basic-auth` (MLFLOW_AUTH) needs.
RUN pip install ".[postgres,cluster]" "mlflow[auth]" ${EXTRA_PACKAGES} \
 && rm -rf build *.egg-info

COPY docker ./docker
RUN chmod 0755 docker/*.sh \
 && useradd --create-home --uid 10001 sweeps \
 && mkdir -p /data /mlflow /runs \
 && chown sweeps:sweeps /data /mlflow /runs
USER sweeps
WORKDIR /runs
# Hydra writes each worker's outputs here; results themselves live in PostgreSQL and MLflow.
CMD ["linear-sweep", "--help"]
