#!/usr/bin/env bash
# perf/profile.sh - a profile of one benchmark: perf record + flame graph where perf works,
# callgrind instruction counts per request otherwise (or with PROFILER=callgrind).
#
#   perf/profile.sh BENCH       BENCH: mailbox | pingpong | timers | jobs | alloc | echo | http
#   PROFILER=callgrind perf/profile.sh echo
#
# mailbox .. alloc profile the in-process benchmark binary (perf/bench_*). echo and http
# profile ecshardd (1 shard) while ecshard-load drives it over loopback (http needs the HTTP
# sample module). Output goes to perf/results/profile-BENCH-<UTC time>/:
#
#   perf:      perf.data, report.txt (perf report --stdio, flat, by symbol),
#              flame.folded and flame.svg (perf/tools/flamegraph.py)
#   callgrind: callgrind.out.*, annotate.txt (callgrind_annotate, top functions) and
#              summary.txt: instructions per operation. For echo/http the server runs
#              twice under callgrind, for WARM and WARM+N requests, and the difference
#              divided by N is the count per request (start-up and shutdown cancel out),
#              as perf-anchors' instr-per-request.sh does for nginx.
#
# This VM has no hardware counters (perf stat -e instructions: <not supported>), so perf
# samples with the cpu-clock software event; call chains come from DWARF unwinding
# (--call-graph dwarf), because the release build keeps no frame pointers.
# Settings: SECONDS_=10 (perf: load duration), N=20000, WARM=2000 (callgrind requests),
# CONNS=16 (echo/http load connections).
set -u
PERF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$PERF_DIR/bench-lib.sh"
BENCHNAME="${1:-}"
PROFILER="${PROFILER:-auto}"
DUR="${SECONDS_:-10}"
N="${N:-20000}"
WARM="${WARM:-2000}"
CONNS="${CONNS:-16}"
case "$BENCHNAME" in
mailbox | pingpong | timers | jobs | alloc | echo | http) ;;
*)
  sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
  exit 2
  ;;
esac

if [[ $PROFILER == auto ]]; then
  if perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then PROFILER=perf; else PROFILER=callgrind; fi
fi
[[ $PROFILER == callgrind ]] && ! command -v valgrind >/dev/null && bl_die "neither perf nor valgrind works here (scripts/deps.sh perf)"
OUT="$RESULTS/profile-$BENCHNAME-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
bl_log "profiling $BENCHNAME with $PROFILER into $OUT"

# The in-process benchmarks: command lines sized for a few seconds (perf) or a
# valgrind-friendly count (callgrind: about 50x slower). Sets CMD and OPS.
bench_cmd() {
  local scale=$1
  case "$BENCHNAME" in
  mailbox)
    bl_build bench_mailbox
    OPS=$((1000000 / scale))
    CMD=("$BUILD/perf/bench_mailbox" --producers 2 --messages $((OPS / 2)) --mode run)
    ;;
  pingpong)
    bl_build bench_pingpong
    OPS=$((100000 / scale))
    CMD=("$BUILD/perf/bench_pingpong" --rounds "$OPS" --mode run)
    ;;
  timers)
    bl_build bench_timers
    OPS=$((1000000 / scale))
    CMD=("$BUILD/perf/bench_timers" --mode addcancel --ops "$OPS")
    ;;
  jobs)
    bl_build bench_jobs
    OPS=$((400000 / scale))
    CMD=("$BUILD/perf/bench_jobs" --shards 1 --workers 1 --window 64 --jobs "$OPS")
    ;;
  alloc)
    bl_build bench_alloc
    OPS=$((5000000 / scale))
    CMD=("$BUILD/perf/bench_alloc" --impl ec --pattern cross --ops "$OPS")
    ;;
  esac
}

server_start() { # WRAPPER... -> sets SPID, SPORT
  SPORT=$(bl_free_port)
  local lname=$BENCHNAME
  "$@" "$BUILD/samples/ecshardd/ecshardd" --shards 1 --set "listener.$lname.listen=\"127.0.0.1:$SPORT\"" \
    "${OTHERS[@]}" --set 'log.level="warning"' >>"$OUT/server.log" 2>&1 &
  SPID=$!
  for ((i = 0; i < 300; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$SPORT") 2>/dev/null && return 0; sleep 0.1; done
  bl_die "ecshardd did not listen on $SPORT (see $OUT/server.log)"
}
load_args() { # extra args
  local a=(--mode "$BENCHNAME" --target "127.0.0.1:$SPORT" --conns "$CONNS" --progress 0)
  [[ $BENCHNAME == http ]] && a+=(--path /hello)
  echo "${a[@]}"
}

if [[ $BENCHNAME == echo || $BENCHNAME == http ]]; then
  bl_build ecshardd ecshard-load
  if ! "$BUILD/samples/ecshardd/ecshardd" --print-config 2>/dev/null | grep -q "protocol = \"$BENCHNAME\""; then
    bl_die "ecshardd has no '$BENCHNAME' listener in this build"
  fi
  LOAD="$BUILD/samples/load/ecshard-load"
  mapfile -t OTHERS < <(bl_only_listeners "$BUILD/samples/ecshardd/ecshardd" "$BENCHNAME")
  if [[ $PROFILER == perf ]]; then
    server_start
    # shellcheck disable=SC2046
    "$LOAD" $(load_args) --duration $((DUR + 2)) --json >"$OUT/load.json" 2>>"$OUT/load.log" &
    lpid=$!
    sleep 1
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$SPID" -o "$OUT/perf.data" -- sleep "$DUR" 2>>"$OUT/perf.log"
    wait "$lpid"
    kill "$SPID"
    wait "$SPID" 2>/dev/null
  else
    for n in "$WARM" $((WARM + N)); do
      server_start valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.$n"
      # shellcheck disable=SC2046
      timeout 600 "$LOAD" $(load_args) --conns 1 --requests "$n" --duration 0 --json >"$OUT/load-$n.json" 2>>"$OUT/load.log"
      kill "$SPID"
      wait "$SPID" 2>/dev/null
    done
  fi
else
  if [[ $PROFILER == perf ]]; then
    bench_cmd 1
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$OUT/perf.data" -- "${CMD[@]}" >"$OUT/bench.txt" 2>>"$OUT/perf.log"
  else
    for scale in 50 10; do
      bench_cmd $scale
      valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.$OPS" "${CMD[@]}" >"$OUT/bench-$OPS.txt" 2>>"$OUT/valgrind.log"
    done
  fi
fi

if [[ $PROFILER == perf ]]; then
  perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 -g none >"$OUT/report.txt" 2>/dev/null
  perf script -i "$OUT/perf.data" 2>/dev/null | python3 "$PERF_DIR/tools/flamegraph.py" "$OUT/flame.svg" \
    --folded "$OUT/flame.folded" --title "ecshard: $BENCHNAME (perf cpu-clock)"
  echo "profile $BENCHNAME (perf, cpu-clock): $OUT/flame.svg, $OUT/report.txt"
  grep -v '^#' "$OUT/report.txt" | grep -v '^$' | head -25
else
  files=$(ls "$OUT"/callgrind.out.* | sort -t. -k3 -n)
  small=$(echo "$files" | head -1)
  big=$(echo "$files" | tail -1)
  callgrind_annotate --inclusive=no "$big" 2>/dev/null | head -60 >"$OUT/annotate.txt"
  ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'; }
  i1=$(ir "$small")
  i2=$(ir "$big")
  n1=${small##*.}
  n2=${big##*.}
  per=$(awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
  echo "profile $BENCHNAME (callgrind): $per instructions per operation ((Ir at $n2 - Ir at $n1) / $((n2 - n1)); user space only)" | tee "$OUT/summary.txt"
  echo "top functions: $OUT/annotate.txt"
  sed -n '/Ir/,$p' "$OUT/annotate.txt" | head -25
fi
