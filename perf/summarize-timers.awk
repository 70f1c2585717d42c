# perf/summarize-timers.awk - tables of medians from the JSON lines of perf/run-timers.sh.
#
#   awk -f perf/summarize-timers.awk perf/results/timers-DATE.txt
#
# Reads the flat one-line JSON objects that bench_timers and its peers print. Costs are
# grouped by (pending, operation, impl) and shown as median [min-max] over the runs, with
# the ratio peer / ecshard of the medians (above 1: ecshard is cheaper). Lateness is grouped
# by (pending, impl): medians over the runs of each run's p50 and p99, the largest max of
# all runs, and the early firings summed. Runs whose checks failed ("ok":false) are
# counted and left out, except that lateness runs of the peers stay in (an early firing
# is what a peer may do, and is shown).

function jget(line, key,    re, v) {
  re = "\"" key "\":(\"[^\"]*\"|[^,}]*)"
  if (!match(line, re))
    return ""
  v = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
  gsub(/"/, "", v)
  return v
}

function push(k, v) {
  vals[k, ++cnt[k]] = v + 0
}

# Sorts list k into s[1..n] and returns n.
function sorted(k,    n, i, j, t) {
  n = cnt[k]
  for (i = 1; i <= n; i++)
    s[i] = vals[k, i]
  for (i = 2; i <= n; i++) {
    t = s[i]
    for (j = i - 1; j >= 1 && s[j] > t; j--)
      s[j + 1] = s[j]
    s[j + 1] = t
  }
  return n
}

function median(k,    n) {
  n = sorted(k)
  if (n == 0)
    return ""
  return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
}

function lo(k) { return sorted(k) ? s[1] : "" }
function hi(k,    n) { n = sorted(k); return n ? s[n] : "" }

function num(v) {
  if (v == "")
    return "-"
  return sprintf(v >= 100 || v <= -100 ? "%.0f" : "%.1f", v)
}

function cell(k) {
  if (!cnt[k])
    return "-"
  return num(median(k)) " [" num(lo(k)) "-" num(hi(k)) "]"
}

function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2fx", a / b) }

function addkey(list, n, key,    i) {
  for (i = 1; i <= n; i++)
    if (list[i] == key)
      return n
  list[n + 1] = key
  return n + 1
}

{
  bench = jget($0, "bench")
  if (bench == "meta") {
    meta[++nmeta] = $0
    next
  }
  if (bench == "failed") {
    failed[jget($0, "impl") " " jget($0, "mode") " " jget($0, "pending")]++
    next
  }
  if (bench != "timers")
    next
  impl = jget($0, "impl")
  mode = jget($0, "mode")
  n = jget($0, "pending") + 0
  npend = addkey(pend, npend, n)
  nimpl = addkey(impls, nimpl, impl)
  ok = jget($0, "ok") == "true"
  if (!ok && !(mode == "lateness" && impl != "ecshard")) {
    bad[impl " " mode " " n]++
    next
  }
  runs[n, mode, impl]++
  if (mode == "addcancel") {
    push(n SUBSEP "add+cancel" SUBSEP impl, jget($0, "addcancel_ns"))
    if (n > 0)
      push(n SUBSEP "re-arm" SUBSEP impl, jget($0, "rearm_ns"))
  } else if (mode == "addfire") {
    push(n SUBSEP "add+fire" SUBSEP impl, jget($0, "addfire_ns"))
  } else if (mode == "lateness") {
    push(n SUBSEP "p50" SUBSEP impl, jget($0, "p50_us"))
    push(n SUBSEP "p99" SUBSEP impl, jget($0, "p99_us"))
    push(n SUBSEP "max" SUBSEP impl, jget($0, "max_us"))
    early[n, impl] += jget($0, "early")
    late_timers[n, impl] += jget($0, "fired")
  }
}

END {
  # Pending counts ascending.
  for (i = 2; i <= npend; i++) {
    t = pend[i]
    for (j = i - 1; j >= 1 && pend[j] > t; j--)
      pend[j + 1] = pend[j]
    pend[j + 1] = t
  }
  nops = split("add+cancel re-arm add+fire", ops, " ")
  printf "\nCost per operation, ns: median [min-max] over the runs; ratio = peer median / ecshard median (>1: ecshard cheaper)\n"
  printf "%-8s %-10s %-22s %-22s %-22s %9s %9s\n", "pending", "op", "ecshard", "libuv", "libevent",
    "uv/ec", "libev/ec"
  for (i = 1; i <= npend; i++) {
    for (o = 1; o <= nops; o++) {
      k = pend[i] SUBSEP ops[o] SUBSEP
      if (!cnt[k "ecshard"] && !cnt[k "libuv"] && !cnt[k "libevent"])
        continue
      ec = median(k "ecshard")
      printf "%-8s %-10s %-22s %-22s %-22s %9s %9s\n", pend[i], ops[o], cell(k "ecshard"),
        cell(k "libuv"), cell(k "libevent"), ratio(median(k "libuv"), ec),
        ratio(median(k "libevent"), ec)
    }
  }
  printf "\nLateness of timers due 1-50 ms ahead, us (fire time - asked deadline): median over the runs of\n"
  printf "each run's p50 and p99, largest max; early = firings before the asked deadline / timers\n"
  printf "%-8s %-17s %9s %9s %9s %14s %5s\n", "pending", "impl", "p50", "p99", "max", "early", "runs"
  for (i = 1; i <= npend; i++) {
    for (m = 1; m <= nimpl; m++) {
      k = pend[i] SUBSEP "p50" SUBSEP impls[m]
      if (!cnt[k])
        continue
      printf "%-8s %-17s %9s %9s %9s %14s %5s\n", pend[i], impls[m], num(median(k)),
        num(median(pend[i] SUBSEP "p99" SUBSEP impls[m])),
        num(hi(pend[i] SUBSEP "max" SUBSEP impls[m])),
        early[pend[i], impls[m]] "/" late_timers[pend[i], impls[m]], runs[pend[i], "lateness", impls[m]]
    }
  }
  for (f in bad)
    printf "checks FAILED (left out): %s: %d runs\n", f, bad[f]
  for (f in failed)
    printf "runs that printed nothing (crash/timeout): %s: %d\n", f, failed[f]
}
