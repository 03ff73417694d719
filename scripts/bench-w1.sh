#!/usr/bin/env bash
# Runs the reference workload W1: builds examples/bench_server.rs and
# examples/load_client.rs (profile release-lto, see Cargo.toml), starts the
# server on 127.0.0.1, drives it with M load clients reading the server's
# CPU and RSS from /proc, and prints the client's report. Stops only the
# processes it started, by pid, also on failure or Ctrl-C.
#
#   scripts/bench-w1.sh                                  # C=1000 E=10 N=M=1000, 5 updates every 2 s
#   scripts/bench-w1.sh -c 100 -n 100                    # smoke run
#   scripts/bench-w1.sh -c 10 -n 10000                   # 10,000 clients
#   scripts/bench-w1.sh --json                           # also a one-line JSON report
#   scripts/bench-w1.sh --delta                          # incremental xDS clients
#   scripts/bench-w1.sh -c 10 -n 10000 --runs 3          # three runs, then a summary
set -euo pipefail
ARGS=("$@")
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: scripts/bench-w1.sh [options]
  -c, --clusters C        clusters (and load assignments)       [1000]
  -e, --endpoints E       endpoints per cluster                 [10]
  -n, --nodes N           node ids the server sets snapshots for [1000]
  -m, --clients M         load clients (one connection each)    [N]
  -i, --interval S        seconds between updates               [2]
  -u, --updates K         updates after the initial snapshot    [5]
      --linger S          server keeps serving at most S s after the last
                          update; it is stopped once the client is done
                          [the client timeout]
      --port P            server port on 127.0.0.1              [18000]
      --connect-rate R    clients opened per second             [unlimited]
      --timeout S         client gives up after S seconds       [derived]
      --no-ads            SnapshotCache::new(false, ..)
      --delta             clients use incremental (delta) ADS
      --json              client also prints a one-line JSON report
      --keep              keep the logs directory
      --runs K            run K times, print each run's rows, then a summary
                          over all their updates                [1]
EOF
}

C=1000 E=10 N=1000 M="" INTERVAL=2 UPDATES=5 LINGER="" PORT=18000
CONNECT_RATE="" TIMEOUT="" ADS_FLAG="--ads" JSON="" DELTA="" KEEP="" RUNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    -c|--clusters) C="$2"; shift 2 ;;
    -e|--endpoints) E="$2"; shift 2 ;;
    -n|--nodes) N="$2"; shift 2 ;;
    -m|--clients) M="$2"; shift 2 ;;
    -i|--interval) INTERVAL="$2"; shift 2 ;;
    -u|--updates) UPDATES="$2"; shift 2 ;;
    --linger) LINGER="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --connect-rate) CONNECT_RATE="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --no-ads) ADS_FLAG="--no-ads"; shift ;;
    --json) JSON="--json"; shift ;;
    --delta) DELTA="--delta"; shift ;;
    --keep) KEEP=1; shift ;;
    --runs) RUNS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
M="${M:-$N}"

case "$RUNS" in
  ''|*[!0-9]*|0) echo "--runs needs a positive count, got '$RUNS'" >&2; exit 2 ;;
esac
if [ "$RUNS" -gt 1 ]; then
  # Each run is this script once more (the last --runs given wins); the
  # summary covers every update row of every run.
  REPORTS=$(mktemp "${TMPDIR:-/tmp}/bench-w1-runs.XXXXXX")
  trap 'rm -f "$REPORTS" "$REPORTS.one"' EXIT
  for run in $(seq "$RUNS"); do
    echo "==== run $run of $RUNS"
    "$0" "${ARGS[@]}" --runs 1 > "$REPORTS.one" 2>&1 || { cat "$REPORTS.one"; rm -f "$REPORTS.one"; exit 1; }
    grep -E 'cold start|^update +clients|^ +[0-9]+ +[0-9]+ |RSS|NACKs|reached' "$REPORTS.one"
    cat "$REPORTS.one" >> "$REPORTS"
    rm -f "$REPORTS.one"
  done
  echo "==== summary of $RUNS runs"
  awk '
    /^ +[0-9]+ +[0-9]+ / {
      n++; cpu += $6
      if (n == 1 || $6 < cpu_lo) cpu_lo = $6; if ($6 > cpu_hi) cpu_hi = $6
      if (n == 1 || $3 < p50_lo) p50_lo = $3; if ($3 > p50_hi) p50_hi = $3
      if (n == 1 || $4 < p99_lo) p99_lo = $4; if ($4 > p99_hi) p99_hi = $4
      if ($5 > max_hi) max_hi = $5
    }
    /cold start: all/ {
      for (i = 1; i < NF; i++) if ($i == "config") v = $(i + 1)
      c++; if (c == 1 || v < cold_lo) cold_lo = v; if (v > cold_hi) cold_hi = v
    }
    /per client [0-9.]+ KiB/ { r++; v = $(NF-1); if (r == 1 || v < rss_lo) rss_lo = v; if (v > rss_hi) rss_hi = v }
    /^NACKs sent:/ { gsub(/[;:]/, " "); nacks += $3; errors += $6 }
    /clients reached update/ { reached++ }
    END {
      if (n == 0) { print "no update rows"; exit 1 }
      printf "updates: %d; server CPU-s per update: mean %.3f, %.3f-%.3f\n", n, cpu / n, cpu_lo, cpu_hi
      printf "latency ms: p50 %.1f-%.1f, p99 %.1f-%.1f, max %.1f\n", p50_lo, p50_hi, p99_lo, p99_hi, max_hi
      printf "cold start s: %.3f-%.3f; RSS per client KiB: %.1f-%.1f\n", cold_lo, cold_hi, rss_lo, rss_hi
      printf "NACKs: %d; stream errors: %d; runs where every client reached the last update: %d of %d\n", nacks, errors, reached, c
    }' "$REPORTS"
  exit 0
fi

if [ -z "$TIMEOUT" ]; then
  # Connecting, then K updates, with a generous margin.
  TIMEOUT=$(awk -v m="$M" -v k="$UPDATES" -v i="$INTERVAL" 'BEGIN { printf "%d", 60 + m / 100 + (k + 1) * i * 2 }')
fi
# The server must outlive the client, which samples it for one interval
# after the last update; it is stopped as soon as the client is done.
LINGER="${LINGER:-$TIMEOUT}"

# Each process holds one socket per client, plus some.
NEED_FDS=$((M + 1024))
SOFT=$(ulimit -Sn)
HARD=$(ulimit -Hn)
if [ "$SOFT" != unlimited ] && [ "$SOFT" -lt "$NEED_FDS" ]; then
  if [ "$HARD" = unlimited ] || [ "$HARD" -ge "$NEED_FDS" ]; then
    ulimit -Sn "$NEED_FDS"
  elif ! ulimit -n "$NEED_FDS" 2>/dev/null; then
    echo "need $NEED_FDS open files per process for $M clients; the hard limit is $HARD (raise it, e.g. as root: ulimit -Hn $NEED_FDS)" >&2
    exit 1
  fi
fi
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  read -r LOW HIGH < /proc/sys/net/ipv4/ip_local_port_range
  if [ $((HIGH - LOW)) -lt "$M" ]; then
    echo "warning: only $((HIGH - LOW)) ephemeral ports for $M connections" >&2
  fi
fi

echo "building (profile release-lto)..."
cargo build --profile release-lto --locked --quiet --example bench_server --example load_client
BIN=target/release-lto/examples

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/bench-w1.XXXXXX")
SERVER_PID=""
CLIENT_PID=""
ours() { # pid: still running and a child of this script (not a reused pid)
  [ -n "$1" ] && [ "$(awk '{ print $4 }' "/proc/$1/stat" 2>/dev/null)" = "$$" ] &&
    [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
stop_pid() { # pid: TERM, then KILL after 5 s; only our own, still running
  local pid="$1"
  ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    ours "$pid" || return 0
    sleep 0.1
  done
  ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$CLIENT_PID"
  stop_pid "$SERVER_PID"
  if [ -n "$KEEP" ]; then
    echo "logs kept in $LOGS"
  else
    rm -rf "$LOGS"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "W1: C=$C E=$E N=$N M=$M interval=${INTERVAL}s updates=$UPDATES ${DELTA:+delta }(open files: $(ulimit -Sn))"
# Both binaries allocate with mimalloc; committing its arenas on demand
# rather than eagerly keeps the server's RSS to what thousands of idle
# streams use, and spares the client a burst of page zeroing while 10,000
# connections open (it made cold starts erratic, 1.1 to 2.7 s).
export MIMALLOC_ARENA_EAGER_COMMIT="${MIMALLOC_ARENA_EAGER_COMMIT:-0}"
"$BIN/bench_server" --port "$PORT" --clusters "$C" --endpoints "$E" --nodes "$N" \
  --interval "$INTERVAL" --updates "$UPDATES" --linger "$LINGER" $ADS_FLAG \
  --wait-streams "$M" --wait-timeout "$TIMEOUT" \
  --pid-file "$LOGS/server.pid" > "$LOGS/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 600); do
  grep -q '^serving on' "$LOGS/server.log" 2>/dev/null && break
  if ! ours "$SERVER_PID"; then
    echo "server exited early:" >&2
    cat "$LOGS/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q '^serving on' "$LOGS/server.log" || { echo "server did not start" >&2; cat "$LOGS/server.log" >&2; exit 1; }

CLIENT_ARGS=(--server "127.0.0.1:$PORT" --clients "$M" --nodes "$N" --expect-updates "$UPDATES"
             --timeout "$TIMEOUT" --server-pid "$SERVER_PID")
[ -n "$CONNECT_RATE" ] && CLIENT_ARGS+=(--connect-rate "$CONNECT_RATE")
[ -n "$JSON" ] && CLIENT_ARGS+=("$JSON")
[ -n "$DELTA" ] && CLIENT_ARGS+=("$DELTA")
# The client keeps the memory it freed (it is reused every update) rather
# than handing it back and faulting it in again while latencies are timed.
MIMALLOC_PURGE_DELAY="${CLIENT_PURGE_DELAY:--1}" \
"$BIN/load_client" "${CLIENT_ARGS[@]}" > "$LOGS/client.log" 2>&1 &
CLIENT_PID=$!
CLIENT_RC=0
wait "$CLIENT_PID" || CLIENT_RC=$?
CLIENT_PID=""

# The client is done: stop the server (graceful on SIGTERM).
stop_pid "$SERVER_PID"
SERVER_PID=""

echo
echo "---- server log"
cat "$LOGS/server.log"
echo "---- client report"
cat "$LOGS/client.log"
exit "$CLIENT_RC"
