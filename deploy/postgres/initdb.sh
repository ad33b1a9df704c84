#!/bin/sh
# First start of the database container (the postgres image runs /docker-entrypoint-initdb.d/* once, on an empty
# data directory): the app's role, neither superuser nor BYPASSRLS so row-level security applies to it, its
# database and the extensions. The RLS guard is installed by the migrate job (DATABASE_ADMIN_URL).
set -eu
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v app_password="${POSTGRES_APP_PASSWORD:?POSTGRES_APP_PASSWORD is required}" <<'SQL'
CREATE ROLE ragdesk LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'app_password';
CREATE DATABASE ragdesk OWNER ragdesk;
\connect ragdesk
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;
GRANT ALL ON SCHEMA public TO ragdesk;
SQL
