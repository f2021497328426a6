#!/usr/bin/env bash
# pg_util.sh -- a throwaway PostgreSQL server for tests and scripts/cluster.sh.
#
#   pg_util.sh start DIR   initdb into DIR/data, start on a free loopback
#                          port (unix socket in DIR too); prints the URL
#                          postgres://smolbot@127.0.0.1:PORT/smolbot
#   pg_util.sh stop DIR    stop it (fast mode); safe to call twice
#   pg_util.sh up DIR      start again (after stop) on the same port
#
# PostgreSQL refuses to run as root: as root the server runs as the
# unprivileged user "nobody" (DIR is handed to it).  Exits 77 with a
# message on stderr when no server can be started here (binaries absent,
# no such user), so callers can skip.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg_util.sh start|stop|up DIR" >&2; exit 2; }

bin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && bin=$d; done
if [ -z "$bin" ] && command -v pg_ctl >/dev/null 2>&1; then bin=$(dirname "$(command -v pg_ctl)"); fi
if [ -z "$bin" ]; then echo "pg_util: no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 77; fi

as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id nobody >/dev/null 2>&1 || { echo "pg_util: no user 'nobody' to run PostgreSQL as" >&2; exit 77; }
    chown nobody "$dir"
    chmod 700 "$dir"
  fi
  if ! as_user "$bin/initdb" -D "$dir/data" -U smolbot --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1; then
    echo "pg_util: initdb failed:" >&2; tail -5 "$dir/initdb.log" >&2; exit 77
  fi
  for try in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    if as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off -c max_connections=100 -c shared_buffers=32MB" \
        start >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      as_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U smolbot smolbot
      echo "postgres://smolbot@127.0.0.1:$port/smolbot"
      exit 0
    fi
  done
  echo "pg_util: the server did not start:" >&2; tail -5 "$dir/server.log" >&2 || true; exit 77
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] || exit 0
  as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  ;;
up)
  port=$(cat "$dir/port")
  as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off -c max_connections=100 -c shared_buffers=32MB" \
      start >/dev/null
  ;;
*) echo "pg_util: unknown command $cmd" >&2; exit 2 ;;
esac
