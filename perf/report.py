#!/usr/bin/env python3
"""perf/report.py - tables and the report of perf/run-all.

  report.py table alloc|idle|scaling|load FILE...   Markdown table of medians [min-max]
  report.py report RUNDIR OUT.md                     docs/perf/REPORT.md and its plots

Input files hold one JSON object per line (perf/results/*.txt). Lines that do not parse
(or carry "bench":"meta") are skipped. The report reads RUNDIR/manifest.txt, written by
perf/run-all: one line per step, "NAME STATUS RESULTS-FILE STDOUT-FILE SECONDS [NOTE]".
Plots are SVG files written next to OUT.md by gnuplot (skipped with a note when gnuplot
is missing).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys


def load(files):
    rows = []
    for f in files:
        try:
            with open(f) as fh:
                for line in fh:
                    line = line.strip()
                    if not line.startswith("{"):
                        continue
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
    return rows


def meta(files):
    for r in load(files):
        if r.get("bench") == "meta" and r.get("of") != "end":
            return r
    return {}


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def fmt(v, unit=""):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return "%.2fM%s" % (v / 1e6, unit)
    if a >= 1e4:
        return "%.1fk%s" % (v / 1e3, unit)
    if a >= 100:
        return "%.0f%s" % (v, unit)
    return "%.2f%s" % (v, unit)


def cell(vals, unit=""):
    m, lo, hi = med(vals)
    if m is None:
        return "-"
    if lo == hi:
        return fmt(m, unit)
    return "%s [%s-%s]" % (fmt(m, unit), fmt(lo), fmt(hi))


def group(rows, key):
    out = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def skipped(rows, bench):
    return ["skipped: " + r["skipped"] for r in rows if r.get("bench") == bench and "skipped" in r]


# ---- alloc ---------------------------------------------------------------------------------

def alloc_table(rows):
    rows = [r for r in rows if r.get("bench") == "alloc" and r.get("ok")]
    g = group(rows, lambda r: (r["pattern"], r["size"], r["impl"]))
    lines = ["| pattern | size | impl | allocs+frees/s | ns/op (wall) | CPU ns/op | x glibc | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for (pat, size, impl) in sorted(g, key=lambda k: (k[0], k[1], ["ec", "ec-vsize", "jemalloc", "glibc"].index(k[2]) if k[2] in ["ec", "ec-vsize", "jemalloc", "glibc"] else 9)):
        rs = g[(pat, size, impl)]
        base = g.get((pat, size, "glibc"), [])
        m = med([r["ops_per_s"] for r in rs])[0]
        b = med([r["ops_per_s"] for r in base])[0]
        ratio = "%.2fx" % (m / b) if b else "-"
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
            pat, size, impl, cell([r["ops_per_s"] for r in rs]), cell([r["ns_per_op"] for r in rs]),
            cell([r["cpu_ns_per_op"] for r in rs]), ratio, len(rs)))
    return "\n".join(lines)


# ---- idle ----------------------------------------------------------------------------------

def idle_table(rows):
    notes = skipped(rows, "idle")
    rows = [r for r in rows if r.get("bench") == "idle" and "skipped" not in r]
    g = group(rows, lambda r: (r["n"], r["server"], r["mode"]))
    lines = ["| N | server | mode | bytes/conn (RSS growth / N) | RSS before -> after (kB) | after close (kB) | kernel slab B/conn (both ends) | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for k in sorted(g):
        rs = g[k]
        ok = all(r.get("ok") for r in rs)
        lines.append("| %d | %s | %s | %s%s | %s -> %s | %s | %s | %d |" % (
            k[0], k[1], k[2], cell([float(r["bytes_per_conn"]) for r in rs]), "" if ok else " (not all opened)",
            fmt(med([r["rss_before_kb"] for r in rs])[0]), fmt(med([r["rss_after_kb"] for r in rs])[0]),
            fmt(med([r["rss_after_close_kb"] for r in rs])[0]),
            fmt(med([float(r["slab_bytes_per_conn_both_ends"]) for r in rs])[0]), len(rs)))
    return "\n".join(lines + [""] + notes)


# ---- scaling -------------------------------------------------------------------------------

def scaling_table(rows):
    notes = skipped(rows, "scaling")
    rows = [r for r in rows if r.get("bench") == "scaling" and "skipped" not in r]
    g = group(rows, lambda r: (r["proto"], r["server_shards"]))
    lines = ["| protocol | server shards | req/s | p50 us | p99 us | p99.9 us | server CPU us/req | client CPU us/req | errors | runs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(g):
        rs = g[k]
        L = [r["load"] for r in rs]
        lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %d | %d |" % (
            k[0], k[1], cell([x["requests_per_s"] for x in L]), cell([x["latency_us"]["p50"] for x in L]),
            cell([x["latency_us"]["p99"] for x in L]), cell([x["latency_us"]["p999"] for x in L]),
            cell([r["server_cpu_us_per_request"] for r in rs]), cell([x["client_cpu_us_per_request"] for x in L]),
            sum(x["errors"] + x["connect_errors"] + x["protocol_errors"] for x in L), len(rs)))
    if rows:
        r = rows[0]
        notes.insert(0, "Client: ecshard-load, %d shard(s), %d connections, closed loop, on the same %d-CPU machine as the server." % (
            r["client_shards"], r["load"]["connections"], r["nproc"]))
    return "\n".join(lines + [""] + notes)


def load_table(rows):
    rows = [r for r in rows if r.get("tool") == "ecshard-load"]
    lines = ["| mode | target | shards x conns | loop | req/s | p50 | p90 | p99 | p99.9 | max (us) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lu = x["latency_us"]
        lines.append("| %s | %s | %d x %d | %s | %s | %s | %s | %s | %s | %s | %d |" % (
            x["mode"], x["target"], x["shards"], x["connections"], x["loop"], fmt(x["requests_per_s"]),
            fmt(lu["p50"]), fmt(lu["p90"]), fmt(lu["p99"]), fmt(lu["p999"]), fmt(lu["max"]),
            x["errors"] + x["connect_errors"] + x["protocol_errors"]))
    return "\n".join(lines)


TABLES = {"alloc": alloc_table, "idle": idle_table, "scaling": scaling_table, "load": load_table}


# ---- plots ---------------------------------------------------------------------------------

def gnuplot(script, outdir):
    if shutil.which("gnuplot") is None:
        return False
    p = subprocess.run(["gnuplot"], input=script, text=True, cwd=outdir, capture_output=True)
    if p.returncode != 0:
        sys.stderr.write("report.py: gnuplot failed:\n" + p.stderr)
        return False
    return True


HEAD = 'set terminal svg size 720,400 dynamic font "sans,11" background "white"\nset grid ytics\nset key outside right top\n'


def plot_mailbox(rows, outdir):
    rows = [r for r in rows if r.get("bench") == "mailbox" and r.get("ok")]
    if not rows:
        return None
    g = group(rows, lambda r: (r["impl"], r["producers"]))
    impls = sorted({k[0] for k in g})
    prods = sorted({k[1] for k in g})
    with open(os.path.join(outdir, "mailbox.dat"), "w") as f:
        f.write("# producers " + " ".join(impls) + " (median msgs/s)\n")
        for p in prods:
            f.write("%d %s\n" % (p, " ".join("%.0f" % (med([r["msgs_per_s"] for r in g.get((i, p), [])])[0] or 0) for i in impls)))
    s = HEAD + 'set output "mailbox.svg"\nset title "Mailbox: messages/s into one shard (median)"\nset xlabel "producer threads"\nset ylabel "messages/s"\nset xtics 1\nset format y "%.1s%c"\n'
    s += "plot " + ", ".join('"mailbox.dat" using 1:%d with linespoints lw 2 title "%s"' % (i + 2, n) for i, n in enumerate(impls)) + "\n"
    return "mailbox.svg" if gnuplot(s, outdir) else None


def plot_alloc(rows, outdir):
    rows = [r for r in rows if r.get("bench") == "alloc" and r.get("ok")]
    if not rows:
        return None
    order = ["ec", "ec-vsize", "jemalloc", "glibc"]
    g = group(rows, lambda r: (r["pattern"], r["impl"]))
    with open(os.path.join(outdir, "alloc.dat"), "w") as f:
        f.write("# impl single cross (median ns per alloc+free, wall)\n")
        for i in order:
            f.write('"%s" %s %s\n' % (i, *["%.1f" % (med([r["ns_per_op"] for r in g.get((p, i), [])])[0] or 0) for p in ("single", "cross")]))
    s = HEAD + 'set output "alloc.svg"\nset title "Allocator: ns per allocation + free (median, lower is better)"\nset style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\nset ylabel "ns"\nset yrange [0:*]\n'
    s += 'plot "alloc.dat" using 2:xtic(1) title "single thread", "" using 3 title "freed on another thread"\n'
    return "alloc.svg" if gnuplot(s, outdir) else None


def plot_scaling(rows, outdir):
    rows = [r for r in rows if r.get("bench") == "scaling" and "skipped" not in r]
    if not rows:
        return None
    protos = sorted({r["proto"] for r in rows})
    g = group(rows, lambda r: (r["proto"], r["server_shards"]))
    parts = []
    for p in protos:
        fn = "scaling-%s.dat" % p
        with open(os.path.join(outdir, fn), "w") as f:
            f.write("# shards req/s server_cpu_us_per_req\n")
            for s in sorted({k[1] for k in g if k[0] == p}):
                rs = g[(p, s)]
                f.write("%d %.0f %.2f\n" % (s, med([r["load"]["requests_per_s"] for r in rs])[0],
                                            med([r["server_cpu_us_per_request"] for r in rs])[0]))
        parts.append('"%s" using 1:2 axes x1y1 with linespoints lw 2 title "%s req/s", "%s" using 1:3 axes x1y2 with linespoints dt 2 lw 2 title "%s server CPU us/req"' % (fn, p, fn, p))
    s = HEAD + 'set output "scaling.svg"\nset title "ecshardd shards (load generator on the same CPUs)"\nset xlabel "server shards"\nset xtics 1\nset ylabel "requests/s"\nset y2label "server CPU us per request"\nset y2tics\nset yrange [0:*]\nset y2range [0:*]\nset format y "%.1s%c"\n'
    s += "plot " + ", ".join(parts) + "\n"
    return "scaling.svg" if gnuplot(s, outdir) else None


def plot_idle(rows, outdir):
    rows = [r for r in rows if r.get("bench") == "idle" and "skipped" not in r]
    if not rows:
        return None
    n0 = min(r["n"] for r in rows)
    g = group([r for r in rows if r["n"] == n0], lambda r: r["server"] + " " + r["mode"])
    with open(os.path.join(outdir, "idle.dat"), "w") as f:
        f.write("# server-mode bytes/conn (median) at N=%d\n" % n0)
        for k in sorted(g):
            f.write('"%s" %.0f\n' % (k, med([float(r["bytes_per_conn"]) for r in g[k]])[0]))
    s = HEAD + 'set output "idle.svg"\nset title "User-space bytes per idle connection, N=%d (target <= 440)"\nset style data histograms\nset style fill solid 0.8 border -1\nset yrange [0:*]\nset ylabel "bytes"\nset xtics rotate by -20\nset key off\n' % n0
    s += 'plot "idle.dat" using 2:xtic(1), 440 with lines lw 2 dt 2 title "target"\n'
    return "idle.svg" if gnuplot(s, outdir) else None


# ---- the report ----------------------------------------------------------------------------

SECTIONS = [
    ("mailbox", "Mailbox: cross-thread messages into one shard", "perf/run-mailbox.sh", "ecshard next to libuv and libevent; see perf/README.md for what each column means."),
    ("pingpong", "Cross-shard ping-pong latency", "perf/run-pingpong.sh", "One token bounced between two shards (or loops)."),
    ("timers", "Timers", "perf/run-timers.sh", "Add+cancel, re-arm, add+fire and lateness next to libuv and libevent."),
    ("jobs", "Thread-pool jobs (pools)", "perf/run-jobs.sh", "Shard -> pool worker -> shard round trips next to libuv's uv_queue_work."),
    ("alloc", "Allocator", "perf/run-alloc.sh", "ec_malloc/ec_free (fixed memtype and vsize) next to jemalloc's mallocx/sdallocx and glibc malloc/free."),
    ("http", "HTTP vs nginx and h2o", "perf/run-http.sh", ""),
    ("smtp", "SMTP vs smtp-sink", "perf/run-smtp.sh", ""),
    ("tls", "TLS vs nginx", "perf/run-tls.sh", ""),
    ("scaling", "Shard scaling", "perf/run-scaling.sh", ""),
    ("idle", "Idle connection memory", "perf/run-idle.sh", "Target: at most 440 bytes of user-space memory per idle plain connection (nginx measured 551 in the perf-anchors baseline)."),
]


def report(rundir, out):
    outdir = os.path.dirname(os.path.abspath(out))
    os.makedirs(outdir, exist_ok=True)
    steps = {}
    with open(os.path.join(rundir, "manifest.txt")) as fh:
        for line in fh:
            parts = line.rstrip("\n").split(" ", 5)
            if len(parts) >= 5:
                steps[parts[0]] = {"status": parts[1], "results": parts[2], "stdout": parts[3],
                                   "secs": parts[4], "note": parts[5] if len(parts) > 5 else ""}
    info = {}
    ipath = os.path.join(rundir, "info.json")
    if os.path.exists(ipath):
        with open(ipath) as fh:
            info = json.load(fh)
    w = []
    w.append("# ecshard performance report\n")
    w.append("Generated by `%s` (%s mode) on %s, commit %s. Machine: %s CPUs (%s), kernel %s. "
             "Load average at start %s, at end %s. Total time %s s.\n" % (
                 info.get("command", "perf/run-all"), info.get("mode", "?"), info.get("date", "?"),
                 info.get("commit", "?"), info.get("nproc", "?"), info.get("cpu", "?"), info.get("kernel", "?"),
                 info.get("load_start", "?"), info.get("load_end", "?"), info.get("seconds", "?")))
    w.append("Every load generator shares the machine with the server it measures, and other work may "
             "run on it too: compare figures within one run, and prefer the CPU time and instruction "
             "figures for small differences. Medians of several runs, with [min-max]. How to read and "
             "reproduce each figure: [README.md](README.md).\n")
    w.append("| step | status | seconds |\n|---|---|---|")
    for name, title, script, _ in SECTIONS:
        st = steps.get(name)
        w.append("| %s | %s | %s |" % (name, (st["status"] + (": " + st["note"] if st["note"] else "")) if st else "not run", st["secs"] if st else "-"))
    w.append("")
    for name, title, script, blurb in SECTIONS:
        st = steps.get(name)
        w.append("## %s\n" % title)
        w.append("`%s`%s\n" % (script, (" - " + blurb) if blurb else ""))
        if st is None:
            w.append("Not run.\n")
            continue
        if st["status"] == "skipped":
            w.append("**skipped: %s**\n" % st["note"])
            continue
        if st["status"] != "ok":
            w.append("**%s** (%s); its output:\n" % (st["status"], st["note"]))
        rows = load([st["results"]]) if st["results"] != "-" else []
        plot = None
        if name in ("alloc", "idle", "scaling"):
            w.append(TABLES[name](rows) + "\n")
            plot = {"alloc": plot_alloc, "idle": plot_idle, "scaling": plot_scaling}[name](rows, outdir)
        if name not in ("alloc", "idle", "scaling") or st["status"] != "ok":
            text = ""
            if st["stdout"] != "-" and os.path.exists(st["stdout"]):
                with open(st["stdout"]) as fh:
                    text = fh.read().strip()
            w.append("```\n%s\n```\n" % (text or "(no output)"))
        if name == "mailbox":
            plot = plot_mailbox(rows, outdir)
        if plot:
            w.append("![%s](%s)\n" % (title, plot))
        if st["results"] != "-":
            rel = os.path.relpath(st["results"], outdir)
            w.append("Raw results: [%s](%s).\n" % (os.path.basename(st["results"]), rel))
    prof = os.path.join(rundir, "profile.txt")
    w.append("## Instructions per request (callgrind)\n")
    w.append("`PROFILER=callgrind perf/profile.sh echo`: ecshardd with one shard, driven by ecshard-load over one "
             "connection, run twice under callgrind; (Ir(big) - Ir(small)) / (requests(big) - requests(small)), "
             "user space only. For comparison, perf-anchors measured nginx at 7,389 instructions per `GET /` "
             "(`return 200`). Flame graphs: `perf/profile.sh BENCH` (README.md).\n")
    if os.path.exists(prof):
        with open(prof) as fh:
            w.append("```\n%s\n```\n" % fh.read().strip())
    else:
        w.append("Not run.\n")
    with open(out, "w") as fh:
        fh.write("\n".join(w))


def main(argv):
    if len(argv) >= 3 and argv[1] == "table" and argv[2] in TABLES:
        print(TABLES[argv[2]](load(argv[3:])))
        return 0
    if len(argv) == 4 and argv[1] == "report":
        report(argv[2], argv[3])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
