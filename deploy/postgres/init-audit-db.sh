#!/usr/bin/env bash
# Runs once, when the postgres service initialises an empty data volume
# (/docker-entrypoint-initdb.d): creates the sync's audit database and its owner next to Airflow's
# metadata database. The audit rows never go into Airflow's own database.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v audit_db="$AUDIT_DB_NAME" -v audit_user="$AUDIT_DB_USER" \
  -v audit_password="$AUDIT_DB_PASSWORD" <<'SQL'
CREATE ROLE :"audit_user" LOGIN PASSWORD :'audit_password';
CREATE DATABASE :"audit_db" OWNER :"audit_user";
SQL
