#!/bin/sh
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d): MLflow
# gets its own database, since Optuna and MLflow both keep an `alembic_version` table.
# POSTGRES_DB (the Optuna study storage) is created by the image itself.
set -eu
: "${MLFLOW_DB:?MLFLOW_DB is not set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=db="$MLFLOW_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
