#!/usr/bin/env bash
# perf/run-timers.sh - timer costs and lateness: ecshard next to libuv and libevent.
#
#   perf/run-timers.sh       # BUILD=build RUNS=5 OPS=1000000 PENDING="10000 1000000"
#
# Builds bench_timers, peer_timers_uv and peer_timers_libevent in $BUILD (default build/;
# a tree without a CMake cache is configured by scripts/build.sh release, or by cmake as
# RelWithDebInfo when $BUILD is elsewhere), then for each N in $PENDING and each mode
# (addcancel, addfire, lateness) runs the three implementations one after the other, RUNS
# times, so that a noisy neighbour hurts all of them alike. Lateness also runs libevent
# with EVENT_BASE_FLAG_PRECISE_TIMER, and a baseline: how late a thread sleeping in
# clock_nanosleep wakes on this machine at that moment (the floor under every loop). Raw
# JSON lines go to perf/results/timers-<UTC date>.txt, then the tables of medians are
# printed. Everything is in-process (no network). About three minutes on 2 vCPUs with the
# defaults. Other knobs: TIMERS (lateness timers per run, 2000), RUN_TIMEOUT (120 s per
# process), RESULTS (output directory).
set -u

PERF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$PERF")"
BUILD="${BUILD:-$ROOT/build}"
RUNS="${RUNS:-5}"
OPS="${OPS:-1000000}"
PENDING="${PENDING:-10000 1000000}"
TIMERS="${TIMERS:-2000}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}" # seconds, per process
RESULTS="${RESULTS:-$PERF/results}"
TARGETS=(bench_timers peer_timers_uv peer_timers_libevent)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() {
  echo "run-timers.sh: $*" >&2
  exit 1
}

build() {
  local type help t have=()
  if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    if [[ "$BUILD" == "$ROOT/build" && -x "$ROOT/scripts/build.sh" ]]; then
      log "configuring $BUILD with scripts/build.sh release"
      # It builds the whole tree; if some other target fails, ours are still built below.
      "$ROOT/scripts/build.sh" release >&2 || log "scripts/build.sh failed; building the timer targets only"
    else
      log "configuring $BUILD (RelWithDebInfo)"
      cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2 || die "cmake configure failed"
    fi
  fi
  [[ -f "$BUILD/CMakeCache.txt" ]] || die "$BUILD is not configured"
  type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
  case "$type" in
  Release | RelWithDebInfo) ;;
  *) log "warning: $BUILD is a '$type' build: the numbers will not be representative" ;;
  esac
  if grep -q '^ECSHARD_SANITIZE:[A-Z]*=.\+' "$BUILD/CMakeCache.txt"; then
    log "warning: $BUILD is a sanitizer build"
  fi
  help=$(cmake --build "$BUILD" --target help 2>/dev/null)
  for t in "${TARGETS[@]}"; do
    if grep -qw -- "$t" <<<"$help"; then
      have+=("$t")
    else
      log "note: target $t is not configured (libuv/libevent not found?): skipped"
    fi
  done
  ((${#have[@]})) || die "no timer benchmark target in $BUILD"
  cmake --build "$BUILD" -j"$(nproc)" --target "${have[@]}" >&2 || die "build failed"
}

bin() {
  local p="$BUILD/perf/$1"
  if [[ -x "$p" ]]; then echo "$p"; fi
}

meta() {
  local cpu commit
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr -cd '[:alnum:] ._()@-')
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
  printf '{"bench":"meta","of":"timers","when":"%s","date":"%s","nproc":%s,"cpu":"%s","kernel":"%s","commit":"%s","runs":%s,"ops":%s,"build":"%s","loadavg":"%s"}\n' \
    "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$cpu" "$(uname -r)" "$commit" "$RUNS" "$OPS" \
    "$BUILD" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# run NAME MODE N BINARY [ARGS...]: one process, its JSON line appended to $out.
run() {
  local name="$1" mode="$2" n="$3" line rc
  shift 3
  line=$(timeout "$RUN_TIMEOUT" "$@" --pending "$n" --ops "$OPS" --timers "$TIMERS" \
    --mode "$mode" --json 2>>"$out.stderr")
  rc=$?
  if [[ -z "$line" ]]; then
    line=$(printf '{"bench":"failed","impl":"%s","mode":"%s","pending":%s,"rc":%d}' \
      "$name" "$mode" "$n" "$rc")
    log "FAILED ($rc): $* --pending $n --mode $mode"
  elif [[ $rc -ne 0 ]]; then
    log "check failed ($rc): $name --pending $n --mode $mode: $line"
  fi
  echo "$line" >>"$out"
}

build
ec=$(bin bench_timers)
uv=$(bin peer_timers_uv)
le=$(bin peer_timers_libevent)
[[ -n "$ec" ]] || die "bench_timers was not built"
mkdir -p "$RESULTS"
out="$RESULTS/timers-$(date -u +%Y%m%d-%H%M%S).txt"
meta start >"$out"

log "pending: $PENDING; ops=$OPS timers=$TIMERS; $RUNS runs; results in $out"
for n in $PENDING; do
  for ((r = 1; r <= RUNS; r++)); do
    log "pending=$n run $r/$RUNS"
    for mode in addcancel addfire lateness; do
      run ecshard "$mode" "$n" "$ec"
      [[ -z "$uv" ]] || run libuv "$mode" "$n" "$uv"
      [[ -z "$le" ]] || run libevent "$mode" "$n" "$le"
      if [[ "$mode" == lateness ]]; then
        [[ -z "$le" ]] || run libevent-precise "$mode" "$n" "$le" --precise
        run nanosleep "$mode" "$n" "$ec" --baseline
      fi
    done
  done
done
meta end >>"$out"

echo "timers: $(nproc) CPUs, load average at start/end: $(sed -n 's/.*"loadavg":"\([^"]*\)".*/\1/p' "$out" | paste -sd'/')"
echo "one loop thread; $OPS operations per measurement; N timers pending 1-2 h ahead throughout"
awk -f "$PERF/summarize-timers.awk" "$out"
echo
echo "raw results: $out"
