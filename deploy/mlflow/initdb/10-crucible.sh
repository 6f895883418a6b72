#!/bin/bash
# Runs once, on an empty data directory (the postgres image's initdb hook).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v crucible_pw="$CRUCIBLE_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE ROLE crucible LOGIN PASSWORD :'crucible_pw';
CREATE DATABASE crucible OWNER crucible;
SQL
