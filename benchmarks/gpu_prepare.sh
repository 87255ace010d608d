#!/usr/bin/env bash
# Before benchmarks/gpu_check.sh on a GPU machine that has torch but no network: fetch, here, the
# wheels of what that image lacks (hydra, optuna, mlflow and their needs) into .whl/, and copy the
# CIFAR-10 JPEG archive into .gpu/ (both ignored by git; carry them to the GPU machine).
#
#   benchmarks/gpu_prepare.sh            # Python 3.12, x86-64 (the GPU image's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
mkdir -p .whl .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
# What the GPU image lacks (it has numpy, scipy, pandas, matplotlib, jinja2, pyyaml, requests, ...).
NEEDS=(hydra-core omegaconf optuna cmaes sqlalchemy alembic mako colorlog greenlet
       mlflow==3.17.2 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 cachetools databricks-sdk google-auth pyasn1
       pyasn1-modules rsa gitpython gitdb smmap importlib-metadata opentelemetry-api opentelemetry-sdk
       opentelemetry-proto opentelemetry-semantic-conventions sqlparse pydantic pydantic-core annotated-types
       typing-inspection python-dotenv flask flask-cors itsdangerous blinker graphene graphql-core graphql-relay
       gunicorn huey fastapi starlette uvicorn skops cryptography cffi pycparser docker)
for p in "${NEEDS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_34_x86_64 -d .whl "$p" 2>&1 | grep -v '^WARNING' || true
done
# antlr4 4.9.3 (what omegaconf needs) ships as a source archive only: build its pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 2>&1 | grep -v '^WARNING' || true
cp -n ../shared/datasets/cifar10-jpeg.tar.gz .gpu/ 2>/dev/null || true
du -sh .whl .gpu
echo "carry: [\".whl\", \".gpu\"]; run: ARCHIVE=.gpu/cifar10-jpeg.tar.gz benchmarks/gpu_check.sh"
