#!/usr/bin/env bash
# Make sure redis-server and PostgreSQL are installed and answering on their default ports.
# Installs with apt only when a binary is missing; starts a server only when none answers.
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_install() {
  echo "ensure-services: installing $* with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then apt_install postgresql; fi
[ "${1:-}" = "--binaries-only" ] && exit 0

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "ensure-services: redis answers on $REDIS_PORT"
else
  echo "ensure-services: starting redis-server on $REDIS_PORT"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile /tmp/kai-redis-"$REDIS_PORT".log
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

pg_ready() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }
if pg_ready; then
  echo "ensure-services: postgres answers on $PG_PORT"
else
  echo "ensure-services: starting postgres on $PG_PORT"
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    $SUDO pg_createcluster "$version" main --start -- --auth-local=trust --auth-host=trust || true
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 100); do pg_ready && break; sleep 0.2; done
fi
pg_ready || { echo "ensure-services: postgres does not answer on $PG_PORT" >&2; exit 1; }
# trust on loopback for the postgres user is what the defaults expect
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "select 1" >/dev/null
