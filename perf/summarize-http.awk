# perf/summarize-http.awk - ecshardd's fixed route next to nginx's `return` and h2o's
# static /hello.txt, from http-bench lines (perf/run-http.sh). mode=data prints the
# gnuplot table instead of Markdown.
function kv(s,   i, n, a, p) {
  delete f
  n = split(s, a, " ")
  for (i = 2; i <= n; i++) {
    p = index(a[i], "=")
    if (p) f[substr(a[i], 1, p - 1)] = substr(a[i], p + 1)
  }
}
$1 == "http-bench" {
  kv($0)
  split(f["label"], l, "-")
  srv = l[1]; w = l[2]
  fixed = (srv == "ecshard" && f["path"] == "/hello") || (srv == "nginx" && f["path"] == "/") ||
          (srv == "h2o" && f["path"] == "/hello.txt")
  if (!fixed) next
  key = w " t" f["threads"] " c" f["conns"]
  if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
  rps[key, srv] = f["rps_med"]; p99[key, srv] = f["p99_us_med"]
}
$1 == "wrk-cpu" {
  kv($0)
  split(f["label"], l, "-")
  wcpu[l[2] " t" f["threads"] " c" f["conns"], l[1]] = f["cpu_pct"] "%"
}
END {
  if (mode == "data") {
    print "# config ecshard nginx h2o"
    for (i = 1; i <= nk; i++) {
      k = order[i]; gsub(" ", "-", k)
      printf("%s %s %s %s\n", k, rps[order[i], "ecshard"] + 0, rps[order[i], "nginx"] + 0,
        rps[order[i], "h2o"] + 0)
    }
    exit
  }
  print "| workers, wrk | ecshardd /hello req/s | nginx / | h2o /hello.txt | vs nginx | vs h2o | p99 µs ecshardd / nginx / h2o | wrk's CPU ecshardd / nginx / h2o |"
  print "|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= nk; i++) {
    k = order[i]
    e = rps[k, "ecshard"]; n = rps[k, "nginx"]; h = rps[k, "h2o"]
    vn = (n > 0) ? sprintf("%.2fx", e / n) : "-"
    vh = (h > 0) ? sprintf("%.2fx", e / h) : "-"
    printf("| %s | %.0f | %.0f | %.0f | %s | %s | %s / %s / %s | %s / %s / %s |\n", k, e, n, h, vn, vh,
      p99[k, "ecshard"], p99[k, "nginx"], p99[k, "h2o"],
      wcpu[k, "ecshard"] ? wcpu[k, "ecshard"] : "-", wcpu[k, "nginx"] ? wcpu[k, "nginx"] : "-",
      wcpu[k, "h2o"] ? wcpu[k, "h2o"] : "-")
  }
}
