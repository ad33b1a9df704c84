#!/bin/sh
# The image's one entrypoint: the command picks the role, so every container of a deployment runs the same image.
#
#   web                        uvicorn (ASGI) on $HOST:$PORT; scale it out freely
#   worker ingest|chat|maintenance
#                              a Celery worker for one role's queues (`queues` prints them); scale each on its own
#   beat                       Celery beat: the periodic sweeps (run exactly one)
#   migrate                    one-shot: RLS guard (with DATABASE_ADMIN_URL), migrations, demo tenant if SEED_DEMO=true
#   manage ARGS...             any manage.py command, e.g. `manage tenant_create --name Acme --owner-email ...`
#   queues                     print "role: queue,queue" for each worker role
#
# web, worker and beat first wait (up to WAIT_FOR_SCHEMA_SECONDS, 0: not at all) until `migrate` has brought the
# schema up to date: Kubernetes starts them beside the migrate Job, not after it.
set -eu
cd "$(dirname "$0")/.."  # /app in the image

worker_queues() {
  case "$1" in
    # Long, CPU-bound parsing and embedding; prefork keeps the tasks' time limits.
    ingest) echo "${INGEST_QUEUE:-ingest}" ;;
    # Answers mostly wait (model, Redis): many threads in one process, sharing a small database pool.
    chat) echo "chat" ;;
    # The beat's sweeps, everything without a queue of its own (evaluation runs, billing notices), and vector
    # upgrades ("embed": long, low priority, kept out of the ingest workers' slots).
    maintenance) echo "maintenance,default,embed" ;;
    *) return 1 ;;
  esac
}

wait_for_schema() {
  [ "${WAIT_FOR_SCHEMA_SECONDS:-600}" = 0 ] && return
  # One process that polls, not one per try: a dozen containers starting at once would slow the migration down.
  python - <<'PY'
import os, sys, time

import django

django.setup()
from django.core.management.base import CommandError
from django.db import connections

from config.commands import require_migrated

deadline = time.monotonic() + float(os.environ.get("WAIT_FOR_SCHEMA_SECONDS") or 600)
while True:
    try:
        require_migrated()
        break
    except CommandError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"entrypoint: {exc} (waited WAIT_FOR_SCHEMA_SECONDS for the migrate job)")
        connections.close_all()
        time.sleep(2)
PY
}

role="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$role" in
  web)
    wait_for_schema
    # A pooled connection per request thread (DB_POOL_MAX); X-Forwarded-* trusted from FORWARDED_ALLOW_IPS.
    export DB_POOL_MAX="${DB_POOL_MAX:-20}"
    exec uvicorn config.asgi:application --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" --lifespan off \
      --workers "${WEB_PROCESSES:-1}" --timeout-graceful-shutdown 20 "$@"
    ;;
  worker)
    kind="${1:-}"
    queues=$(worker_queues "$kind") || { echo "entrypoint: worker ingest|chat|maintenance, not '$kind'" >&2; exit 2; }
    shift
    wait_for_schema
    case "$kind" in
      chat)
        export DB_POOL_MAX="${CHAT_DB_POOL_MAX:-20}" SEARCH_SIDES_IN_PARALLEL=false
        exec celery -A config worker -n "chat@%h" -l "${CELERY_LOG_LEVEL:-info}" -Q "$queues" -P threads \
          -c "${CHAT_CONCURRENCY:-300}" "$@" ;;
      ingest)
        exec celery -A config worker -n "ingest@%h" -l "${CELERY_LOG_LEVEL:-info}" -Q "$queues" \
          -c "${INGEST_CONCURRENCY:-1}" "$@" ;;
      maintenance)
        exec celery -A config worker -n "maintenance@%h" -l "${CELERY_LOG_LEVEL:-info}" -Q "$queues" \
          -c "${MAINTENANCE_CONCURRENCY:-2}" "$@" ;;
    esac
    ;;
  beat)
    wait_for_schema
    exec celery -A config beat -l "${CELERY_LOG_LEVEL:-info}" -s /app/var/celerybeat-schedule "$@"
    ;;
  migrate)
    if [ "${SEED_DEMO:-false}" = true ] && [ "${DEBUG:-false}" != true ] && [ -z "${DEMO_PASSWORD:-}" ]; then
      echo "entrypoint: SEED_DEMO=true in production mode needs a DEMO_PASSWORD of your own" >&2
      exit 1
    fi
    # The guard again on every run: it is a no-op when current, and DATABASE_RLS_KEY may have changed.
    if [ -n "${DATABASE_ADMIN_URL:-}" ]; then python manage.py rls_install; fi
    python manage.py migrate --noinput
    if [ "${SEED_DEMO:-false}" = true ]; then python manage.py seed_demo; fi
    # BM25 indexes written by an older text analyser (the others wait only for the schema, so they serve meanwhile).
    python manage.py rebuild_search_indexes
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  queues)
    for kind in ingest chat maintenance; do echo "$kind: $(worker_queues "$kind")"; done
    ;;
  *)
    echo "entrypoint: unknown role '$role' (web, worker ingest|chat|maintenance, beat, migrate, manage, queues)" >&2
    exit 2
    ;;
esac
