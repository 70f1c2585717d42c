#!/usr/bin/env bash
# perf/run-mailbox.sh - cross-thread mailbox throughput: ecshard next to libuv and libevent.
#
#   perf/run-mailbox.sh            # BUILD=build RUNS=5 PRODUCERS="1 2 3 4" TOTAL=1000000
#
# Builds the benchmarks in $BUILD (configured as Release if new), then for each producer
# count runs, RUNS times and interleaved so that machine noise hits all alike:
# bench_mailbox --mode event, bench_mailbox --mode run, peer_mailbox_uv and
# peer_mailbox_libevent, each with TOTAL messages split over the producers. Raw JSON lines
# go to perf/results/mailbox-<UTC date>.txt (stderr of the runs beside it); the table of
# medians is printed at the end. PEER_ARGS are passed to both peers (for example
# "--mode vector" or "--notify empty", see perf/README.md). About 1-2 minutes on 2 cores.
set -u
# shellcheck source=perf/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

PRODUCERS="${PRODUCERS:-1 2 3 4}"
TOTAL="${TOTAL:-1000000}"
PEER_ARGS="${PEER_ARGS:-}"

bl_build bench_mailbox peer_mailbox_uv peer_mailbox_libevent
mkdir -p "$RESULTS"
out="$RESULTS/mailbox-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta mailbox >"$out"
ec=$(bl_bin bench_mailbox)
uv=$(bl_bin peer_mailbox_uv)
le=$(bl_bin peer_mailbox_libevent)
[[ -n "$ec" ]] || bl_die "bench_mailbox was not built"

for p in $PRODUCERS; do
  m=$((TOTAL / p))
  bl_log "producers=$p messages=$m x $RUNS runs"
  for ((r = 1; r <= RUNS; r++)); do
    bl_run ecshard-event "$out" "$ec" --producers "$p" --messages "$m" --mode event
    bl_run ecshard-run "$out" "$ec" --producers "$p" --messages "$m" --mode run
    # shellcheck disable=SC2086 # PEER_ARGS is a list of flags
    [[ -z "$uv" ]] || bl_run libuv "$out" "$uv" --producers "$p" --messages "$m" $PEER_ARGS
    # shellcheck disable=SC2086
    [[ -z "$le" ]] || bl_run libevent "$out" "$le" --producers "$p" --messages "$m" $PEER_ARGS
  done
done

echo "mailbox: $(nproc) CPUs; messages/s from P producer threads into one consumer thread;"
echo "wake/1k = eventfd writes per 1000 messages; cpu ns = process CPU time per message."
bl_load_note "$out"
awk -f "$BL_PERF/summarize.awk" "$out"
echo
echo "raw results: $out"
