#!/usr/bin/env bash
# perf/run-pingpong.sh - cross-shard round-trip latency: ecshard next to libuv and libevent.
#
#   perf/run-pingpong.sh           # BUILD=build RUNS=5 ROUNDS=50000 WARMUP=1000
#
# Builds the benchmarks in $BUILD (configured as Release if new), then runs RUNS times,
# interleaved: bench_pingpong --mode run, bench_pingpong --mode event, peer_pingpong_uv
# and peer_pingpong_libevent. Raw JSON lines go to perf/results/pingpong-<UTC date>.txt;
# the table of medians is printed at the end. About 1 minute on 2 cores.
set -u
# shellcheck source=perf/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

ROUNDS="${ROUNDS:-50000}"
WARMUP="${WARMUP:-1000}"

bl_build bench_pingpong peer_pingpong_uv peer_pingpong_libevent
mkdir -p "$RESULTS"
out="$RESULTS/pingpong-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta pingpong >"$out"
ec=$(bl_bin bench_pingpong)
uv=$(bl_bin peer_pingpong_uv)
le=$(bl_bin peer_pingpong_libevent)
[[ -n "$ec" ]] || bl_die "bench_pingpong was not built"

bl_log "rounds=$ROUNDS warmup=$WARMUP x $RUNS runs"
for ((r = 1; r <= RUNS; r++)); do
  bl_run ecshard-run "$out" "$ec" --rounds "$ROUNDS" --warmup "$WARMUP" --mode run
  bl_run ecshard-event "$out" "$ec" --rounds "$ROUNDS" --warmup "$WARMUP" --mode event
  [[ -z "$uv" ]] || bl_run libuv "$out" "$uv" --rounds "$ROUNDS" --warmup "$WARMUP"
  [[ -z "$le" ]] || bl_run libevent "$out" "$le" --rounds "$ROUNDS" --warmup "$WARMUP"
done

echo "pingpong: $(nproc) CPUs; one token bounced between two loop threads; latency of a"
echo "round trip measured on the first; wake/rt = eventfd writes per round trip."
bl_load_note "$out"
awk -f "$BL_PERF/summarize.awk" "$out"
echo
echo "raw results: $out"
