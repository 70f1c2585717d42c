#!/usr/bin/env bash
# perf/run-scaling.sh - ecshardd with 1..N shards, driven by ecshard-load: throughput,
# latency and the server's CPU time per request.
#
#   perf/run-scaling.sh     # BUILD=build RUNS=3 SHARDS="1 2 3 4" PROTOS="echo http"
#                           # DURATION=5 CONNS=64 CLIENT_SHARDS=1 DEPTH=1 SIZE=64
#
# For each protocol in $PROTOS that this ecshardd serves (echo always; http once the HTTP
# sample module is merged; others are reported as skipped) and each shard count, it starts
# ecshardd on a random loopback port, runs ecshard-load RUNS times (closed loop, CONNS
# connections, CLIENT_SHARDS client threads, DURATION seconds after a 1 s warm-up that is
# not counted) and stops the server.
#
# The load generator runs on the SAME machine as the server ($(nproc) CPUs here): past
# nproc - CLIENT_SHARDS server shards the two compete for the CPUs, so throughput cannot
# scale with shards. That is why every line also carries the server's CPU time per request
# (utime + stime of all its threads from /proc/PID/stat, divided by the requests): it
# shows the cost per request whether or not the CPUs were free.
#
# Raw JSON lines (ecshard-load's object plus server fields) go to
# $RESULTS/scaling-<UTC time>.txt; a table of medians [min-max] is printed.
set -u
PERF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$PERF/bench-lib.sh"
RUNS="${RUNS:-3}"
SHARDS="${SHARDS:-1 2 3 4}"
PROTOS="${PROTOS:-echo http}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONNS="${CONNS:-64}"
CLIENT_SHARDS="${CLIENT_SHARDS:-1}"
DEPTH="${DEPTH:-1}"
SIZE="${SIZE:-64}"
HTTP_PATH="${HTTP_PATH:-/hello}"

bl_build ecshardd ecshard-load
ECSHARDD="$BUILD/samples/ecshardd/ecshardd"
LOAD="$BUILD/samples/load/ecshard-load"
[[ -x "$ECSHARDD" && -x "$LOAD" ]] || bl_die "ecshardd or ecshard-load was not built"
mkdir -p "$RESULTS"
out="$RESULTS/scaling-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta scaling >"$out"
TCK=$(getconf CLK_TCK)

# The listener of ecshardd's default configuration that serves protocol $1, or nothing.
listener_for() {
  "$ECSHARDD" --print-config 2>/dev/null | awk -v proto="$1" '
    /^listener/ { inl = 1 }
    inl && /^[[:space:]]*[A-Za-z0-9_]+[[:space:]]*[=:][[:space:]]*\{/ { name = $1; sub(/[=:].*/, "", name) }
    inl && $0 ~ "protocol[[:space:]]*=[[:space:]]*\"" proto "\"" { print name; exit }'
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

for proto in $PROTOS; do
  lname=$(listener_for "$proto")
  if [[ -z "$lname" ]]; then
    echo "{\"bench\":\"scaling\",\"proto\":\"$proto\",\"skipped\":\"ecshardd serves no '$proto' listener in this build (module not merged yet)\"}" >>"$out"
    bl_log "skipped: $proto (no listener for it in ecshardd's default configuration)"
    continue
  fi
  # every other listener of the default configuration is switched off
  mapfile -t others < <(bl_only_listeners "$ECSHARDD" "$lname")
  for s in $SHARDS; do
    for ((r = 1; r <= RUNS; r++)); do
      p=$(bl_free_port)
      "$ECSHARDD" --shards "$s" --set "listener.$lname.listen=\"127.0.0.1:$p\"" \
        --set "listener.$lname.idle_timeout=600.0" --set 'log.level="warning"' "${others[@]}" \
        >>"$out.stderr" 2>&1 &
      pid=$!
      for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "{\"bench\":\"failed\",\"impl\":\"scaling-$proto-s$s\",\"why\":\"ecshardd did not start\"}" >>"$out"
        bl_log "FAILED: ecshardd did not start (see $out.stderr)"
        continue
      fi
      args=(--mode "$proto" --target "127.0.0.1:$p" --shards "$CLIENT_SHARDS" --conns "$CONNS"
        --depth "$DEPTH" --duration "$((DURATION + WARMUP))" --warmup "$WARMUP" --progress 0 --json)
      [[ $proto == echo ]] && args+=(--size "$SIZE")
      [[ $proto == http ]] && args+=(--path "$HTTP_PATH")
      # server CPU is read around the measured part only: sample after the warm-up
      (sleep "$WARMUP"; cpu_ticks "$pid" >"$out.c0.$$") &
      sampler=$!
      line=$(timeout $((DURATION + WARMUP + 30)) "$LOAD" "${args[@]}" 2>>"$out.stderr")
      c1=$(cpu_ticks "$pid")
      wait "$sampler"
      c0=$(cat "$out.c0.$$" 2>/dev/null || echo 0)
      rm -f "$out.c0.$$"
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      if [[ -z "$line" ]]; then
        echo "{\"bench\":\"failed\",\"impl\":\"scaling-$proto-s$s\"}" >>"$out"
        bl_log "FAILED: $proto shards=$s"
        continue
      fi
      req=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$line")
      cpu_us=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$req" 'BEGIN { printf "%.2f", n ? (b - a) / t * 1e6 / n : 0 }')
      echo "{\"bench\":\"scaling\",\"proto\":\"$proto\",\"server_shards\":$s,\"client_shards\":$CLIENT_SHARDS,\"nproc\":$(nproc),\"server_cpu_us_per_request\":$cpu_us,\"load\":$line}" >>"$out"
      bl_log "$proto shards=$s run $r: $(sed -n 's/.*"requests_per_s":\([0-9.]*\).*/\1/p' <<<"$line") req/s, server $cpu_us us CPU/req"
    done
  done
done
bl_load_note "$out" >/dev/null
python3 "$PERF/report.py" table scaling "$out"
