#!/usr/bin/env bash
# cluster.sh -- PostgreSQL, N smolbot replicas and nginx in front, all on
# this machine (loopback only): what "More than one machine" in the README
# describes, in one command, for trying it and for tests.
#
#   cluster.sh start N [-m MODEL] [--dir DIR] [--bin PATH] [-- SERVE_ARGS...]
#   cluster.sh stop [--dir DIR]
#
# start: PostgreSQL in DIR/pg (tests/pg_util.sh: a throwaway cluster, run
# as "nobody" under root), N `smolbot serve --db postgres://...` on free
# ports, nginx from deploy/nginx.conf; prints "url http://127.0.0.1:PORT"
# once every replica answers /health.  DIR (default /tmp/smolbot-cluster)
# keeps the logs, DIR/replicas (one "PORT PID" line each), DIR/db_url and
# DIR/url.  Anything that fails to start stops what was started.
# stop: SIGTERM to every replica (they drain), nginx, PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}; shift || true
n=0; model=""; dir=/tmp/smolbot-cluster; bin=build/smolbot; extra=()
if [ "$cmd" = start ]; then n=${1:-}; shift || true; fi
while [ $# -gt 0 ]; do
  case "$1" in
    -m|--model) model=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

stop_all() {
  local d=$1
  if [ -f "$d/replicas" ]; then
    while read -r port pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$d/replicas"
    for _ in $(seq 1 100); do # up to 10 s for the drains
      alive=0
      while read -r port pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$d/replicas"
      [ $alive = 0 ] && break
      sleep 0.1
    done
    while read -r port pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$d/replicas"
  fi
  if [ -f "$d/nginx.pid" ]; then kill -QUIT "$(cat "$d/nginx.pid")" 2>/dev/null || true; fi
  bash tests/pg_util.sh stop "$d/pg" || true
}

case "$cmd" in
start)
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: cluster.sh start N [-m MODEL] [--dir DIR]" >&2; exit 2; }
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { echo "cluster.sh: nginx is not installed (apt-get install nginx-light)" >&2; exit 77; }
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$bin" ] || { echo "cluster.sh: $bin not built (make)" >&2; exit 2; }
  if [ -e "$dir/replicas" ]; then stop_all "$dir"; fi
  rm -rf "$dir"; mkdir -p "$dir/tmp"; chmod 755 "$dir"; chmod 1777 "$dir/tmp"
  trap 'echo "cluster.sh: start failed, stopping" >&2; stop_all "$dir"; exit 1' ERR
  url=$(bash tests/pg_util.sh start "$dir/pg") || { rc=$?; stop_all "$dir"; exit $rc; }
  echo "$url" >"$dir/db_url"
  margs=(); [ -n "$model" ] && margs=(-m "$model")
  : >"$dir/replicas"
  ups=""
  for i in $(seq 1 "$n"); do
    log="$dir/replica$i.log"
    # one thread each: N replicas share this machine's cores
    "$bin" serve --host 127.0.0.1 --port 0 --db "$url" --threads 1 --drain-timeout 60 "${margs[@]}" "${extra[@]}" \
      >"$log.out" 2>"$log" &
    pid=$!
    for _ in $(seq 1 300); do
      port=$(sed -nE 's|^listening on http://127.0.0.1:([0-9]+).*|\1|p' "$log.out" | head -1)
      [ -n "$port" ] && break
      kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: replica $i exited:" >&2; tail -5 "$log" >&2; false; }
      sleep 0.1
    done
    [ -n "$port" ] || { echo "cluster.sh: replica $i did not start" >&2; false; }
    echo "$port $pid" >>"$dir/replicas"
    ups="$ups        server 127.0.0.1:$port max_fails=1 fail_timeout=3s;\n"
  done
  # nginx on a free port: try a few
  for _ in 1 2 3 4 5 6; do
    lport=$(( 30000 + (RANDOM * 32768 + RANDOM) % 20000 ))
    sed -e "s|@PREFIX@|$dir|g" -e "s|@LISTEN@|127.0.0.1:$lport|" -e "s|@UPSTREAMS@|$ups|" deploy/nginx.conf >"$dir/nginx.conf"
    if "$nginx_bin" -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" -g 'daemon on;' 2>"$dir/nginx-start.log"; then break; fi
    lport=""
  done
  [ -n "$lport" ] || { echo "cluster.sh: nginx did not start:" >&2; cat "$dir/nginx-start.log" >&2; false; }
  echo "http://127.0.0.1:$lport" >"$dir/url"
  # ready: every replica healthy (the model loaded)
  while read -r port pid; do
    for _ in $(seq 1 600); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
      [ "$code" = 200 ] && break
      kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: replica on $port exited" >&2; false; }
      sleep 0.1
    done
    [ "$code" = 200 ] || { echo "cluster.sh: replica on $port not healthy" >&2; false; }
  done <"$dir/replicas"
  trap - ERR
  echo "url http://127.0.0.1:$lport"
  echo "db  $url"
  echo "dir $dir ($n replicas: $(awk '{printf "%s ", $1}' "$dir/replicas"))"
  ;;
stop)
  stop_all "$dir"
  ;;
*) echo "usage: cluster.sh start N [-m MODEL] [--dir DIR] [--bin PATH] [-- SERVE_ARGS] | stop [--dir DIR]" >&2; exit 2 ;;
esac
