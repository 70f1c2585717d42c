#!/usr/bin/env bash
# perf/run-http.sh - ecshardd's http module next to nginx and h2o, on this machine, now.
#
#   perf/run-http.sh            # RUNS=3 DURATION=10 WORKERS="1 2" SHAPES="1:64 2:256"
#
# Drives the shared peer harness ($root/../shared/perf-anchors, its README says what each
# driver measures) so that the three servers go through exactly the same scripts:
#
#   1. throughput and latency: for each worker count W in $WORKERS (ecshardd --shards W,
#      nginx with W workers, h2o with W threads; access logs off, keep-alive) and each wrk
#      shape T:C in $SHAPES (threads:connections), the three servers one after the other
#      (interleaved, so that a noisy neighbour hurts all alike), each with http-bench.sh:
#      a warm-up, then RUNS x wrk -d DURATION, median [min-max] of req/s, p50 and p99.
#      ecshardd serves its fixed route GET /hello ("hello\n"); nginx `return 200 "hello\n"`
#      (GET /); h2o 2.2 has no such directive: its fastest equivalent is the 6-byte static
#      file /hello.txt (its mruby "/" is far slower; see the anchors' README).
#      STATIC=1 adds the static file /hello.txt on all three.
#   2. syscalls per request (perf tracepoint over the server's threads): one keep-alive
#      connection, sequential (tools/http_seq.py), and under wrk -t1 -c64, with 1 worker.
#   3. user-space instructions per request (valgrind, instr-per-request.sh), 1 worker;
#      INSTR_H2O=1 adds h2o (slow under valgrind).
#
# Raw result lines go to perf/results/http-<UTC time>.txt (gitignored); the Markdown
# summary (tools/summarize.py plus the ratios) to http-<UTC time>.md and a gnuplot chart
# to http-<UTC time>.png next to it. Everything listens on 127.0.0.1, on ports the kernel
# hands out; every run is bounded (wrk -d, timeouts); servers are stopped by PID. About
# 15 minutes with the defaults on 2 vCPUs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PA="${PA:-$root/../shared/perf-anchors}"
BUILD="${BUILD:-$root/build}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
WORKERS="${WORKERS:-1 2}"
SHAPES="${SHAPES:-1:64 2:256}"
STATIC="${STATIC:-0}"
INSTR_N="${INSTR_N:-20000}"
RESULTS="${RESULTS:-$root/perf/results}"
export RUNS DURATION

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() {
  echo "run-http.sh: $*" >&2
  exit 1
}

[[ -x "$PA/http-bench.sh" ]] || die "the peer harness is not at $PA (set PA=)"
for t in wrk nginx h2o valgrind perf python3 curl; do
  command -v "$t" >/dev/null || die "$t not found (scripts/deps.sh perf)"
done
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  "$root/scripts/build.sh" release >&2 || die "build failed"
fi
type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
san=$(sed -n 's/^ECSHARD_SANITIZE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
[[ "$type" == Release || "$type" == RelWithDebInfo ]] || log "warning: $BUILD is a $type build"
[[ -z "$san" ]] || die "$BUILD is a sanitizer build ($san): numbers would mean nothing"
cmake --build "$BUILD" -j"$(nproc)" --target ecshardd >&2 || die "build failed"
ECSHARDD="$BUILD/samples/ecshardd/ecshardd"

mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%d-%H%M%S)
out="$RESULTS/http-$stamp.txt"
{
  echo "# run-http.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) cpus=$(nproc) kernel=$(uname -r) commit=$(git -C "$root" rev-parse --short HEAD) loadavg=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
  echo "# versions: nginx $(nginx -v 2>&1 | sed 's#.*/##') h2o $(h2o --version 2>/dev/null | head -1 | awk '{print $3}') wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null)"
} >"$out"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The ecshardd command line: only the http listener, on $2, with $1 shards.
ecshardd_cmd() {
  local cmd=("$ECSHARDD" --shards "$1" --set "listener.http.listen=\"127.0.0.1:$2\"") l
  for l in $("$ECSHARDD" --print-config 2>/dev/null | sed -n '/^listener = {/,/^};/s/^  \([A-Za-z_0-9-]*\) = {$/\1/p'); do
    [[ "$l" == http ]] || cmd+=(--set "listener.$l.enabled=false")
  done
  echo "${cmd[@]}"
}

# start SERVER W PORT: prints the PID.
start() {
  case $1 in
  ecshard) # shellcheck disable=SC2046 # the command line is split on purpose
    "$PA/start-cmd.sh" "127.0.0.1:$3" -- $(ecshardd_cmd "$2" "$3") ;;
  nginx) "$PA/start-nginx.sh" "$2" "$3" ;;
  h2o) "$PA/start-h2o.sh" "$2" "$3" ;;
  esac
}

fixed_path() {
  case $1 in
  ecshard) echo /hello ;;
  nginx) echo / ;;
  h2o) echo /hello.txt ;;
  esac
}

# wrk runs through perf/tools/cpu-of (a `wrk` first in PATH for http-bench.sh), which
# records its user+system time: its share of a CPU shows when wrk, not the server, set the
# rate (wrk -t1 near 100%).
wrapdir="$RESULTS/.wrk-cpu-$stamp"
mkdir -p "$wrapdir"
ln -sf "$root/perf/tools/cpu-of" "$wrapdir/wrk"
wrk_bin=$(command -v wrk)
# wrk_cpu LABEL THREADS CONNS PATH: the wrk-cpu line of the http-bench call just made.
wrk_cpu() {
  [[ -s "$wrapdir/cpu.txt" ]] || return 0
  awk -v l="$1" -v t="$2" -v c="$3" -v p="$4" -v runs="$RUNS" -v d="$DURATION" '
    { u[NR] = $1; s[NR] = $2; sub("user=", "", u[NR]); sub("sys=", "", s[NR]) }
    END { first = NR > runs ? NR - runs + 1 : 1; n = NR - first + 1; tot = 0  # skip the warm-up
          for (i = first; i <= NR; i++) tot += u[i] + s[i]
          if (n > 0) printf "wrk-cpu label=%s threads=%s conns=%s path=%s runs=%d cpu_pct=%.0f\n", l, t, c, p, n, tot / (n * d) * 100 }' \
    "$wrapdir/cpu.txt"
}

# ---- 1. throughput and latency -------------------------------------------------------
for w in $WORKERS; do
  for shape in $SHAPES; do
    for srv in ecshard nginx h2o; do
      paths=$(fixed_path $srv)
      [[ "$STATIC" == 1 && $srv != h2o ]] && paths="$paths /hello.txt"
      port=$(free_port)
      pid=$(start $srv "$w" "$port")
      for p in $paths; do
        log "$srv w$w t${shape%%:*} c${shape##*:} $p"
        rm -f "$wrapdir/cpu.txt"
        PATH="$wrapdir:$PATH" CPU_OF_REAL="$wrk_bin" CPU_OF_OUT="$wrapdir/cpu.txt" \
          THREADS=${shape%%:*} CONNS=${shape##*:} SERVER_PID=$pid LABEL="$srv-w$w" \
          "$PA/http-bench.sh" "127.0.0.1:$port" "$p" >>"$out" || log "warning: http-bench failed for $srv"
        wrk_cpu "$srv-w$w" "${shape%%:*}" "${shape##*:}" "$p" >>"$out"
      done
      "$PA/stop-server.sh" "$pid" >&2
    done
  done
done

# ---- 2. syscalls per request -----------------------------------------------------------
for srv in ecshard nginx h2o; do
  port=$(free_port)
  pid=$(start $srv 1 "$port")
  p=$(fixed_path $srv)
  LABEL="$srv-w1-seq" "$PA/syscall-count.sh" "$pid" 20000 -- \
    python3 "$PA/tools/http_seq.py" 127.0.0.1 "$port" 20000 "$p" >>"$out" || log "warning: syscall count failed"
  LABEL="$srv-w1-wrk" "$PA/syscall-count.sh" "$pid" wrk -- \
    wrk -t1 -c64 -d5s "http://127.0.0.1:$port$p" >>"$out" || log "warning: syscall count failed"
  STRACE=1 LABEL="$srv-w1-strace" "$PA/syscall-count.sh" "$pid" 5000 -- \
    python3 "$PA/tools/http_seq.py" 127.0.0.1 "$port" 5000 "$p" >>"$out" || log "warning: strace failed"
  "$PA/stop-server.sh" "$pid" >&2
done

# ---- 3. user-space instructions per request ------------------------------------------------
port=$(free_port)
# shellcheck disable=SC2046
URLPATH=/hello LABEL=ecshard-w1 "$PA/instr-per-request.sh" "127.0.0.1:$port" "$INSTR_N" -- \
  $(ecshardd_cmd 1 "$port") >>"$out" || log "warning: instruction count failed (ecshard)"
port=$(free_port)
# shellcheck disable=SC2046
URLPATH=/ LABEL=nginx-w1 "$PA/instr-per-request.sh" "127.0.0.1:$port" "$INSTR_N" -- \
  $(PA_PRINT_CMD=1 "$PA/start-nginx.sh" 0 "$port") >>"$out" || log "warning: instruction count failed (nginx)"
if [[ "${INSTR_H2O:-0}" == 1 ]]; then
  port=$(free_port)
  # shellcheck disable=SC2046
  URLPATH=/hello.txt LABEL=h2o-w1 "$PA/instr-per-request.sh" "127.0.0.1:$port" "$INSTR_N" -- \
    $(PA_PRINT_CMD=1 "$PA/start-h2o.sh" 1 "$port") >>"$out" || log "warning: instruction count failed (h2o)"
fi

rm -rf "$wrapdir"

# ---- summary -------------------------------------------------------------------------------
md="${out%.txt}.md"
{
  echo "# run-http.sh results ($(head -1 "$out" | cut -c3-))"
  echo
  python3 "$PA/tools/summarize.py" "$out"
  echo
  echo "## ecshardd relative to the peers (median req/s; p99)"
  echo
  awk -f "$root/perf/summarize-http.awk" "$out"
} >"$md"
cat "$md"
awk -v mode=data -f "$root/perf/summarize-http.awk" "$out" >"${out%.txt}.dat"
if command -v gnuplot >/dev/null; then
  gnuplot -e "datafile='${out%.txt}.dat'; outfile='${out%.txt}.png'" "$root/perf/http.gp" ||
    log "warning: gnuplot failed"
fi
log "results: $out, $md, ${out%.txt}.png"
