#!/usr/bin/env bash
# perf/run-alloc.sh - the allocator: ec_malloc/ec_free next to jemalloc direct and glibc.
#
#   perf/run-alloc.sh       # BUILD=build RUNS=5 OPS=2000000 SIZES="64 192" BATCH=64
#
# bench_alloc with each implementation (ec: a fixed memtype; ec-vsize: ec_malloc_size;
# jemalloc: mallocx/sdallocx; glibc: __libc_malloc/__libc_free) and each pattern (single:
# one thread allocates BATCH objects and frees them; cross: one thread allocates, another
# frees, as with mailbox messages), run alternately RUNS times so that machine noise hits
# all of them alike. Raw JSON lines go to $RESULTS/alloc-<UTC time>.txt; a table of
# medians [min-max] is printed.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
OPS="${OPS:-2000000}"
SIZES="${SIZES:-64 192}"
BATCH="${BATCH:-64}"

bl_build bench_alloc
mkdir -p "$RESULTS"
out="$RESULTS/alloc-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta alloc >"$out"
bin=$(bl_bin bench_alloc)
[[ -n "$bin" ]] || bl_die "bench_alloc was not built"
for size in $SIZES; do
  for pattern in single cross; do
    bl_log "size=$size pattern=$pattern x $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
      for impl in ec ec-vsize jemalloc glibc; do
        bl_run "$impl" "$out" "$bin" --impl "$impl" --pattern "$pattern" --size "$size" --ops "$OPS" --batch "$BATCH"
      done
    done
  done
done
echo "alloc: $(nproc) CPUs; allocation+free pairs; medians over $RUNS runs [min-max]; x glibc = throughput ratio."
bl_load_note "$out"
python3 "$(dirname "${BASH_SOURCE[0]}")/report.py" table alloc "$out"
