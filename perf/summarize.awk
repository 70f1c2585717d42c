# perf/summarize.awk - turns the JSON lines of perf/run-*.sh into tables of medians.
#
#   awk -f perf/summarize.awk FILE...
#
# Reads flat one-line JSON objects as the benchmarks print them (no nesting). Mailbox
# lines are grouped by (producers, impl), ping-pong lines by impl; each figure is shown
# as its median over the runs and [min-max]. Ratios compare medians of ecshard rows with
# the libuv and libevent rows of the same group. Runs whose checks failed ("ok":false)
# are counted and left out of the figures.

function jget(line, key,    re, v) {
  re = "\"" key "\":(\"[^\"]*\"|[^,}]*)"
  if (!match(line, re))
    return ""
  v = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
  gsub(/"/, "", v)
  return v
}

# Adds value v to list k (lists are "n" counts plus indexed values).
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

function fmt(v) {
  if (v == "")
    return "-"
  if (v >= 1e6)
    return sprintf("%.2fM", v / 1e6)
  if (v >= 1e4)
    return sprintf("%.1fk", v / 1e3)
  if (v >= 100)
    return sprintf("%.0f", v)
  return sprintf("%.2f", v)
}

function range(k) { return cnt[k] ? "[" fmt(lo(k)) "-" fmt(hi(k)) "]" : "" }

function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2fx", a / b) }

# Order of implementations in the tables: ecshard first, then the peers.
function rank(impl) {
  if (impl ~ /^ecshard-event/) return 1
  if (impl ~ /^ecshard-run/) return 2
  if (impl ~ /^libuv/) return 3
  if (impl ~ /^libevent/) return 4
  return 5
}

{
  bench = jget($0, "bench")
  impl = jget($0, "impl")
  if (bench == "meta") {
    meta[++nmeta] = $0
    next
  }
  if (bench == "failed") {
    failed[impl]++
    next
  }
  if (bench != "mailbox" && bench != "pingpong")
    next
  g = bench == "mailbox" ? jget($0, "producers") : "-"
  key = bench SUBSEP g SUBSEP impl
  if (!(key in seen)) {
    seen[key] = 1
    order[++nkeys] = key
  }
  if (jget($0, "ok") != "true") {
    bad[key]++
    next
  }
  good[key]++
  if (bench == "mailbox") {
    push(key SUBSEP "rate", jget($0, "msgs_per_s"))
    push(key SUBSEP "wake", jget($0, "wakeups_per_1000"))
    push(key SUBSEP "cpu", jget($0, "cpu_ns_per_msg"))
  } else {
    push(key SUBSEP "rate", jget($0, "rtt_per_s"))
    push(key SUBSEP "p50", jget($0, "p50_us"))
    push(key SUBSEP "p99", jget($0, "p99_us"))
    push(key SUBSEP "max", jget($0, "max_us"))
    push(key SUBSEP "wake", jget($0, "wakeups_per_rt"))
  }
}

END {
  # Sort keys by (bench, group, rank).
  for (i = 1; i <= nkeys; i++) {
    split(order[i], a, SUBSEP)
    sk[i] = sprintf("%s %06d %d %s", a[1], a[2] == "-" ? 0 : a[2], rank(a[3]), a[3])
  }
  for (i = 2; i <= nkeys; i++) {
    t = order[i]; u = sk[i]
    for (j = i - 1; j >= 1 && sk[j] > u; j--) { order[j + 1] = order[j]; sk[j + 1] = sk[j] }
    order[j + 1] = t; sk[j + 1] = u
  }
  # Reference medians per group for the ratios.
  for (i = 1; i <= nkeys; i++) {
    split(order[i], a, SUBSEP)
    if (a[3] == "libuv" || a[3] == "libevent")
      ref[a[1], a[2], a[3]] = median(order[i] SUBSEP "rate")
  }
  last = ""
  for (i = 1; i <= nkeys; i++) {
    k = order[i]
    split(k, a, SUBSEP)
    if (a[1] != last) {
      last = a[1]
      if (a[1] == "mailbox") {
        printf "\n%-3s %-22s %10s %-17s %9s %-15s %8s %8s %8s %4s\n", "P", "impl", "msgs/s",
          "[min-max]", "wake/1k", "[min-max]", "cpu ns", "/libuv", "/libev", "runs"
      } else {
        printf "\n%-22s %9s %-17s %8s %8s %9s %8s %8s %8s %4s\n", "impl", "rtt/s", "[min-max]",
          "p50 us", "p99 us", "max us", "wake/rt", "/libuv", "/libev", "runs"
      }
    }
    r = median(k SUBSEP "rate")
    isec = a[3] ~ /^ecshard/
    vu = isec ? ratio(r, ref[a[1], a[2], "libuv"]) : ""
    ve = isec ? ratio(r, ref[a[1], a[2], "libevent"]) : ""
    runs = good[k] + 0
    if (bad[k])
      runs = runs "+" bad[k] "bad"
    if (a[1] == "mailbox")
      printf "%-3s %-22s %10s %-17s %9s %-15s %8s %8s %8s %4s\n", a[2], a[3], fmt(r),
        range(k SUBSEP "rate"), fmt(median(k SUBSEP "wake")), range(k SUBSEP "wake"),
        fmt(median(k SUBSEP "cpu")), vu, ve, runs
    else
      printf "%-22s %9s %-17s %8s %8s %9s %8s %8s %8s %4s\n", a[3], fmt(r), range(k SUBSEP "rate"),
        fmt(median(k SUBSEP "p50")), fmt(median(k SUBSEP "p99")), fmt(hi(k SUBSEP "max")),
        fmt(median(k SUBSEP "wake")), vu, ve, runs
  }
  for (f in failed)
    printf "FAILED runs of %s: %d\n", f, failed[f]
}
