#!/usr/bin/env bash
# perf/run-jobs.sh - thread-pool job round trips: ecshard (bench_jobs) next to libuv
# (peer_jobs_uv, uv_queue_work), at equal thread counts.
#
#   perf/run-jobs.sh        # BUILD=build RUNS=5 JOBS=400000 CONFIGS="..." (see below)
#
# Each configuration is "SHARDS WORKERS WINDOW WORK_NS": S shards (libuv: S loops) each keep
# WINDOW jobs in flight on a pool of WORKERS threads (libuv: UV_THREADPOOL_SIZE), every
# job's work spinning WORK_NS nanoseconds. Window 1 measures the latency of a lone job;
# larger windows measure throughput. The two programs run alternately, RUNS times each,
# so that machine noise hits both alike. Raw JSON lines go to perf/results/jobs-<UTC
# time>.txt; the table of medians ([min-max]) and the ecshard/libuv throughput ratio is
# printed at the end. About a minute on 2 cores.
set -u
# shellcheck source=perf/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

JOBS="${JOBS:-400000}"
CONFIGS="${CONFIGS:-1 1 1 0;1 1 64 0;1 1 256 0;1 2 256 0;2 2 256 0;1 2 64 1000}"

bl_build bench_jobs peer_jobs_uv
mkdir -p "$RESULTS"
out="$RESULTS/jobs-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta jobs >"$out"
ec=$(bl_bin bench_jobs)
uv=$(bl_bin peer_jobs_uv)
[[ -n "$ec" ]] || bl_die "bench_jobs was not built"

IFS=';' read -r -a configs <<<"$CONFIGS"
for cfg in "${configs[@]}"; do
  read -r s w win work <<<"$cfg"
  n=$JOBS
  ((win == 1)) && n=$((JOBS / 20)) # one job at a time: a lone round trip is ~20x slower
  args=(--shards "$s" --workers "$w" --window "$win" --work "$work" --jobs "$n")
  bl_log "shards=$s workers=$w window=$win work=${work}ns jobs=$n x $RUNS runs"
  for ((r = 1; r <= RUNS; r++)); do
    bl_run ecshard "$out" "$ec" "${args[@]}"
    [[ -z "$uv" ]] || bl_run libuv "$out" "$uv" "${args[@]}"
  done
done

echo "jobs: $(nproc) CPUs; round trips (shard -> pool worker -> same shard) per second,"
echo "latency per round trip; medians over $RUNS runs [min-max]; x = ecshard/libuv."
bl_load_note "$out"
awk '
function jget(line, key,    re, v) {
  re = "\"" key "\":(\"[^\"]*\"|[^,}]*)"
  if (!match(line, re)) return ""
  v = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
  gsub(/"/, "", v)
  return v
}
function med(k,    n, i, j, t, a) {
  n = cnt[k]
  for (i = 1; i <= n; i++) a[i] = val[k, i]
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  lo[k] = a[1]; hi[k] = a[n]
  return n == 0 ? "" : (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
}
function add(k, v) { val[k, ++cnt[k]] = v + 0 }
function f(v) { return v >= 1e6 ? sprintf("%.2fM", v / 1e6) : v >= 1e4 ? sprintf("%.1fk", v / 1e3) : sprintf("%.1f", v) }
jget($0, "bench") == "jobs" && jget($0, "ok") == "true" {
  c = jget($0, "shards") " " jget($0, "workers") " " jget($0, "window") " " jget($0, "work_ns")
  i = jget($0, "impl")
  if (!(c in seen)) { seen[c] = 1; order[++nc] = c }
  add(c SUBSEP i SUBSEP "tput", jget($0, "jobs_per_s"))
  add(c SUBSEP i SUBSEP "p50", jget($0, "p50_us"))
  add(c SUBSEP i SUBSEP "p99", jget($0, "p99_us"))
  add(c SUBSEP i SUBSEP "cpu", jget($0, "cpu_ns_per_job"))
}
jget($0, "bench") == "jobs" && jget($0, "ok") != "true" { bad++ }
END {
  printf "%-16s %-8s %22s %8s %8s %9s %7s\n", "shards/workers/", "impl", "jobs/s", "p50 us", "p99 us", "cpu ns/j", "x"
  printf "%-16s\n", "window/work ns"
  for (o = 1; o <= nc; o++) {
    c = order[o]
    ue = med(c SUBSEP "libuv" SUBSEP "tput")
    for (m = 1; m <= 2; m++) {
      i = m == 1 ? "ecshard" : "libuv"
      k = c SUBSEP i SUBSEP "tput"
      if (!cnt[k]) continue
      t = med(k)
      x = (m == 1 && ue > 0) ? sprintf("%.2fx", t / ue) : ""
      printf "%-16s %-8s %8s [%5s-%5s] %8.1f %8.1f %9.0f %7s\n", m == 1 ? c : "", i, f(t), f(lo[k]), f(hi[k]),
        med(c SUBSEP i SUBSEP "p50"), med(c SUBSEP i SUBSEP "p99"), med(c SUBSEP i SUBSEP "cpu"), x
    }
  }
  if (bad) printf "%d runs failed their checks and are left out\n", bad
}' "$out"
echo
echo "raw results: $out"
