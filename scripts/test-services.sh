#!/usr/bin/env bash
# Starts (or stops) the real servers the many-replica tests need: PostgreSQL and Redis on
# 127.0.0.1, on non-default ports, with throw-away data under .pgdata/ (ignored by git).
# `start` also installs Debian's chromium when missing, for the dashboard's browser tests.
#
#   scripts/test-services.sh start   install if missing (apt-get, as root), start, write the URLs
#   scripts/test-services.sh stop    stop both and delete their data (safe to run twice)
#
# The URLs go to .pgdata/services.env (BYOK_TEST_POSTGRES_URL=..., BYOK_TEST_REDIS_URL=...),
# which tests/services.py reads: make recipes do not share environment variables. Ports can be
# moved with BYOK_TEST_PG_PORT / BYOK_TEST_REDIS_PORT.
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/.pgdata"
# The cluster lives outside the checkout: initdb runs as the postgres user, who may not be able
# to enter the checkout's directory (CI checkouts under /root, for one).
PG_PORT="${BYOK_TEST_PG_PORT:-55432}"
PGDATA_DIR="${BYOK_TEST_PGDATA:-${TMPDIR:-/tmp}/byok-test-pg-$PG_PORT}"
REDIS_DIR="$STATE/redis"
URLS="$STATE/services.env"
REDIS_PORT="${BYOK_TEST_REDIS_PORT:-56379}"
PG_USER=byok

log() { echo "test-services: $*" >&2; }

pg_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  # Debian keeps the server binaries per major version, off PATH.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

install_missing() {
  local packages=()
  [ -n "$(pg_bindir)" ] || packages+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  # The dashboard's browser tests drive Debian's chromium (Playwright's download is not used).
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  [ ${#packages[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${packages[*]}; install them (Debian: apt-get install ${packages[*]})"
    exit 1
  fi
  log "installing ${packages[*]} with apt-get"
  # Keep the packages from starting their own system-wide servers on the default ports.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
  return 0
}

# Runs a PostgreSQL tool as a non-root user: initdb and postgres refuse to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin
  bin="$(pg_bindir)"
  if [ -f "$PGDATA_DIR/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    log "PostgreSQL already running on port $PG_PORT"
    return
  fi
  rm -rf "$PGDATA_DIR"
  mkdir -p "$PGDATA_DIR"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown -R postgres: "$PGDATA_DIR"
  fi
  as_pg "$bin/initdb" -D "$PGDATA_DIR" -U "$PG_USER" --auth=trust --no-sync --locale=C \
    -E UTF8 >"$STATE/initdb.log" 2>&1 || { cat "$STATE/initdb.log" >&2; return 1; }
  # Durability is pointless for throw-away test data; these settings make it several times faster.
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 30 \
    -o "-p $PG_PORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$PGDATA_DIR/server.log" >&2; return 1; }
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" byok
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}

start_redis() {
  if [ -f "$REDIS_DIR/redis.pid" ] && kill -0 "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null; then
    log "Redis already running on port $REDIS_PORT"
    return
  fi
  mkdir -p "$REDIS_DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$REDIS_DIR" \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save '' \
    --appendonly no
  local tries=0
  until redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then cat "$REDIS_DIR/redis.log" >&2; return 1; fi
    sleep 0.1
  done
  log "Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//') on 127.0.0.1:$REDIS_PORT"
}

stop_all() {
  local bin
  bin="$(pg_bindir)"
  if [ -n "$bin" ] && [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ -f "$REDIS_DIR/redis.pid" ]; then
    local pid
    pid="$(cat "$REDIS_DIR/redis.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$STATE" "$PGDATA_DIR"
}

case "${1:-}" in
  start)
    started=$(date +%s)
    install_missing
    mkdir -p "$STATE"
    # Whatever fails half-way, leave nothing running behind.
    trap 'stop_all' ERR
    start_postgres
    start_redis
    trap - ERR
    {
      echo "BYOK_TEST_POSTGRES_URL=postgresql://$PG_USER:byok@127.0.0.1:$PG_PORT/byok"
      echo "BYOK_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    } >"$URLS"
    log "ready in $(( $(date +%s) - started ))s; URLs in ${URLS#"$ROOT"/}"
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
