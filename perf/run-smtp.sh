#!/usr/bin/env bash
# perf/run-smtp.sh - the SMTP module (samples/smtp in ecshardd) beside Postfix's smtp-sink.
#
#   perf/run-smtp.sh        # RUNS=5 SESSIONS=20 SIZE=1024 MESSAGES=20000 PMESSAGES=100000
#                           # SPOOL_MESSAGES=5000 SHARDS="1 2" INSTR_N=5000 COST=1 SINK=1 SPOOL=1
#                           # SPIN=50000 SPIN_SHARDS=1
#   perf/run-smtp.sh --summarize perf/results/smtp-DATE.txt   # tables and plot again
#
# With the perf-anchors harness ($root/../shared/perf-anchors), interleaved run by run:
#  1. throughput, sink mode vs smtp-sink, at each shard count in SHARDS: smtp-source -d
#     (lock-step, connection kept), smtp-pipeline -n (lock-step C client) and smtp-pipeline
#     (PIPELINING), SESSIONS sessions, SIZE-byte messages; median of RUNS runs, with the
#     server's CPU time per message, and smtp-source's own (perf/tools/cpu-of runs it);
#     at each shard count in SPIN_SHARDS, a second ecshardd with event_loop.io_spin_ns=SPIN
#     (polling before sleeping, docs/architecture.md 3.3) runs in the same rotation
#     (SPIN="" leaves it out), and its syscalls and context switches per message are counted;
#  2. spool mode (fsync per message) with smtp-source -d and smtp-pipeline, and the fsyncs
#     per message (strace);
#  3. cost per message on one shard (COST=1): syscalls (perf tracepoint) for smtp-source -d
#     -s 1, smtp-pipeline -s 1 and -s SESSIONS; user-space instructions (valgrind) for
#     smtp-source -d -s 1 (instr-per-request.sh) and smtp-pipeline -s 1 (same method).
# Raw lines go to perf/results/smtp-<UTC>.txt, the tables to perf/results/smtp-<UTC>.md and
# the plot to perf/results/smtp-<UTC>.svg; UPDATE_DOCS=1 also copies the plot to
# docs/perf/smtp.svg. About 8 minutes on 2 cores. Loopback only, every run time-limited.
set -euo pipefail
# shellcheck source=perf/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
PA="$BL_ROOT/../shared/perf-anchors"
[[ -x "$PA/smtp-bench.sh" ]] || bl_die "the perf-anchors harness is not at $PA"
for t in smtp-source smtp-sink valgrind perf strace gnuplot; do
  command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || bl_die "$t is missing: scripts/deps.sh perf"
done

SESSIONS="${SESSIONS:-20}" SIZE="${SIZE:-1024}" MESSAGES="${MESSAGES:-20000}"
PMESSAGES="${PMESSAGES:-100000}" SPOOL_MESSAGES="${SPOOL_MESSAGES:-5000}"
SHARDS="${SHARDS:-1 2}" INSTR_N="${INSTR_N:-5000}" COST="${COST:-1}"
SINK="${SINK:-1}" SPOOL="${SPOOL:-1}" # SINK=0 / SPOOL=0 / COST=0 skip parts 1 / 2 / 3
SPIN="${SPIN-50000}" SPIN_SHARDS="${SPIN_SHARDS:-1}" # the io_spin_ns variant (SPIN="": none)

# ---- tables and plot ---------------------------------------------------------------------
# summarize RAW: RAW.md (tables) and RAW.svg (plot) next to the raw file RAW.txt.
summarize() {
python3 - "$1" "${1%.txt}" "$SESSIONS" "$SIZE" "$RUNS" <<'EOF'
import re, statistics, sys
raw, base, sessions, size, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rate, cpu, ccpu, sysc, instr, fsync, files, csw = {}, {}, {}, {}, {}, {}, [], {}
for line in open(raw):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    label = kv.get("label", "")
    if line.startswith("smtp-bench") and "msgs_per_s_med" in kv:
        rate.setdefault(label, []).append(float(kv["msgs_per_s_med"]))
        if "server_cpu_us_per_msg_med" in kv:
            cpu.setdefault(label, []).append(float(kv["server_cpu_us_per_msg_med"]))
    elif line.startswith("client-cpu"):
        ccpu.setdefault(label, []).append(float(kv["cpu_us_per_msg"]))
    elif line.startswith("syscall-count") and "fsync" in label:
        m = re.search(r"fsync:([0-9.]+)", kv.get("top_per_unit", ""))
        fsync[label.split(":")[0]] = float(m.group(1)) if m else 0.0
    elif line.startswith("syscall-count"):
        sysc[label] = float(kv["syscalls_per_unit"])
        csw[label] = (float(kv.get("cs_per_unit", "nan")), float(kv.get("cpu_us_per_unit", "nan")))
    elif line.startswith("instr-per-request"):
        instr[label] = int(kv["instructions_per_request"])
    elif line.startswith("spool-files"):
        files.append((label, int(kv["files"]), int(kv["expected"])))
med = lambda v: statistics.median(v) if v else float("nan")
clients = [("source-d", "smtp-source -d (lock-step)", "smtp-source -d"),
           ("pipeline-n", "smtp-pipeline -n (lock-step)", "pipeline -n"),
           ("pipeline", "smtp-pipeline (PIPELINING)", "PIPELINING")]
servers = sorted({l.split(":")[0] for l in rate if l.startswith("ecshard-sink")}) + ["smtp-sink"]
spins = sorted({l.split(":")[0] for l in rate if l.startswith("ecshard-spin")})
servers = servers[:-1] + spins + servers[-1:]
md = ["## Throughput, sink mode (%s sessions, %s-byte messages; median of %d runs)" %
      (sessions, size, runs), "",
      "| client | " + " | ".join(servers) + " | ratio (best ecshard default / smtp-sink) |",
      "|---|" + "---|" * (len(servers) + 1)]
dat = open(base + ".dat", "w")
title = lambda srv: ("ecshard, %s shard%s%s" % (srv.rsplit("-", 1)[1], "s" if srv[-1] != "1" else "",
                                                ", io_spin" if "spin" in srv else "")
                     if srv.startswith("ecshard") else srv)
dat.write("# columns %d\n" % (len(servers) + 1))
dat.write("client " + " ".join('"%s"' % title(x) for x in servers) + "\n")
for key, name, short in clients:
    vals = [med(rate.get("%s:%s" % (s, key), [])) for s in servers]
    cpus = [med(cpu.get("%s:%s" % (s, key), [])) for s in servers]
    best = max(v for s, v in zip(servers, vals) if s.startswith("ecshard-sink")) if len(vals) > 1 else float("nan")
    md.append("| %s | " % name + " | ".join("%.0f msg/s (%.1f us CPU/msg)" % (v, c) for v, c in zip(vals, cpus))
              + " | %.2fx |" % (best / vals[-1] if vals[-1] else float("nan")))
    dat.write('"%s" ' % short + " ".join("%.0f" % v for v in vals) + "\n")
dat.close()
if ccpu:
    # The client's CPU per message times its rate is the share of one CPU it used:
    # smtp-source is one process, so near 100% it set the pace, whatever the server's speed.
    md += ["", "smtp-source itself, same runs: CPU per message (user + system, median) and the share of one "
           "CPU that is at the measured rate; near 100%, the client and not the server set the rate.", "",
           "| client | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
    for key, name, short in clients:
        if not any(ccpu.get("%s:%s" % (s, key)) for s in servers):
            continue
        cells = []
        for s in servers:
            c, v = med(ccpu.get("%s:%s" % (s, key), [])), med(rate.get("%s:%s" % (s, key), []))
            cells.append("%.1f us (%.0f%%)" % (c, c * v / 1e4))
        md.append("| %s | " % name + " | ".join(cells) + " |")
spin_rows = [(s, s.replace("spin", "sink")) for s in spins]
if any(("%s:source-d-s%s" % (s, sessions)) in sysc for s, _ in spin_rows):
    md += ["", "## Polling before sleeping (event_loop.io_spin_ns), smtp-source -d -s %s" % sessions, "",
           "| server | msg/s (median) | syscalls/msg | context switches/msg | server CPU us/msg |",
           "|---|---|---|---|---|"]
    for s, plain in spin_rows:
        for srv in (plain, s):
            k = "%s:source-d-s%s" % (srv, sessions)
            if k in sysc:
                md.append("| %s | %.0f | %.2f | %.3f | %.1f |" % (title(srv), med(rate.get(srv + ":source-d", [])),
                          sysc[k], csw[k][0], csw[k][1]))
md += ["", "## Spool mode (fsync per message; median of runs)", "",
       "| shards | smtp-source -d msg/s | smtp-pipeline msg/s | fsyncs/msg | files in new/ = messages |", "|---|---|---|---|---|"]
for s in sorted({l.split(":")[0] for l in rate if l.startswith("ecshard-spool")}):
    ok = all(f == e for (l, f, e) in files if l == s)
    md.append("| %s | %.0f | %.0f | %.2f | %s |" % (s.rsplit("-", 1)[1], med(rate.get(s + ":source-d", [])),
              med(rate.get(s + ":pipeline", [])), fsync.get(s, float("nan")), "yes" if ok else "NO"))
if sysc or instr:
    md += ["", "## Cost per message, one shard (sink mode)", "",
           "| measure | ecshard | smtp-sink | ratio |", "|---|---|---|---|"]
    for key, name in (("source-d-s1", "syscalls, smtp-source -d -s 1"), ("pipeline-s1", "syscalls, smtp-pipeline -s 1"),
                      ("pipeline-s" + sessions, "syscalls, smtp-pipeline -s " + sessions)):
        a, b = sysc.get("ecshard-sink-1:" + key), sysc.get("smtp-sink:" + key)
        if a is not None and b:
            md.append("| %s | %.2f | %.2f | %.2fx |" % (name, a, b, a / b))
    for key, name in (("source-d-s1", "instructions, smtp-source -d -s 1"), ("pipeline-s1", "instructions, smtp-pipeline -s 1")):
        a, b = instr.get("ecshard-sink-1:" + key), instr.get("smtp-sink:" + key)
        if a is not None and b:
            md.append("| %s | %d | %d | %.2fx |" % (name, a, b, a / b))
open(base + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
ncols=$(sed -n 's/^# columns //p' "${1%.txt}.dat")
  [[ "${ncols:-0}" -ge 3 ]] || return 0 # no sink-mode runs (SINK=0): no plot
gnuplot <<EOF
set terminal svg size 800,420 dynamic font "sans,11"
set output "${1%.txt}.svg"
set title "SMTP sink: messages/s, $SESSIONS sessions, $SIZE-byte messages (median of $RUNS)"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set ylabel "messages/s"
set yrange [0:*]
set key top left
set grid ytics
plot for [i=2:$ncols] "${1%.txt}.dat" using i:xtic(1) title columnhead(i)
EOF
}
if [[ "${1:-}" == --summarize ]]; then # re-tabulate an earlier run: --summarize RAW.txt
  summarize "${2:?--summarize FILE}"
  exit 0
fi

bl_build ecshardd
ecshardd="$BUILD/samples/ecshardd/ecshardd"
mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%d-%H%M%S)
out="$RESULTS/smtp-$stamp.txt"
export PA_RUN="$RESULTS/smtp-$stamp.run"
mkdir -p "$PA_RUN"
bl_meta smtp >"$out"
# shellcheck source=/dev/null
source "$PA/lib.sh"
pipeline=$(pa_build_tool smtp-pipeline)
smtp_source=$(command -v smtp-source || echo /usr/sbin/smtp-source)

# A random high port pair for this run (pa_port_free refuses ports in use).
base=$((20000 + RANDOM % 20000))
ec_port=$base sink_port=$((base + 1)) spin_port=$((base + 2))
ec_pid="" sink_pid="" spin_pid=""
cleanup() {
  [[ -n "$ec_pid" ]] && "$PA/stop-server.sh" "$ec_pid" >/dev/null 2>&1
  [[ -n "$spin_pid" ]] && "$PA/stop-server.sh" "$spin_pid" >/dev/null 2>&1
  [[ -n "$sink_pid" ]] && "$PA/stop-server.sh" "$sink_pid" >/dev/null 2>&1
  true
}
trap cleanup EXIT

# ecshardd's command line: SMTP only, on $ec_port, with these shards and --set options.
ec_cmd() {
  local shards=$1
  shift
  echo "$ecshardd" --shards "$shards" --set listener.echo.enabled=false \
    --set listener.urlfetch.enabled=false --set "listener.smtp.listen=\"127.0.0.1:$ec_port\"" \
    --set smtp.max_sessions_per_ip=0 --set 'log.level="warning"' "$@"
}
ec_start() {
  # shellcheck disable=SC2046 # word splitting of ec_cmd is intended (no spaces in paths)
  ec_pid=$("$PA/start-cmd.sh" "127.0.0.1:$ec_port" -- $(ec_cmd "$@") | tail -1)
}
spin_start() { # the io_spin_ns variant, beside the first (its own port, no admin listener)
  local shards=$1
  shift
  # shellcheck disable=SC2046
  spin_pid=$("$PA/start-cmd.sh" "127.0.0.1:$spin_port" -- $(ec_port=$spin_port ec_cmd "$shards" \
    --set listener.admin.enabled=false --set listener.console.enabled=false \
    --set listener.http.enabled=false --set listener.https.enabled=false \
    --set "event_loop.io_spin_ns=$SPIN" "$@") | tail -1)
}
ec_stop() {
  "$PA/stop-server.sh" "$ec_pid" >/dev/null 2>&1 || true
  ec_pid=""
}

# One smtp-bench run: bench LABEL PORT PID CLIENT [VAR=VALUE...]. For smtp-source, the
# client's own CPU per message is recorded too (perf/tools/cpu-of stands in for it through
# the harness's SMTP_SOURCE), so the tables show when the load generator, not the server,
# set the rate.
bench() {
  local label=$1 port=$2 pid=$3 client=$4 a msgs=0 cpu_file="$PA_RUN/cpu-of.txt"
  shift 4
  for a in "$@"; do
    if [[ "$a" == MESSAGES=* ]]; then msgs=${a#MESSAGES=}; fi
  done
  rm -f "$cpu_file"
  env RUNS=1 SESSIONS="$SESSIONS" SIZE="$SIZE" SERVER_PID="$pid" LABEL="$label" CLIENT="$client" \
    SMTP_SOURCE="$BL_PERF/tools/cpu-of" CPU_OF_REAL="$smtp_source" CPU_OF_OUT="$cpu_file" "$@" \
    "$PA/smtp-bench.sh" "127.0.0.1:$port" 2>>"$out.stderr" | tee -a "$out" >/dev/null ||
    echo "smtp-bench label=$label failed" >>"$out"
  if [[ -s "$cpu_file" ]] && ((msgs > 0)); then
    awk -v l="$label" -v n="$msgs" '{ split($1, u, "="); split($2, s, "=");
      printf "client-cpu label=%s messages=%d cpu_us_per_msg=%.1f\n", l, n, (u[2] + s[2]) * 1e6 / n }' \
      "$cpu_file" >>"$out"
  fi
  return 0
}
clients() { # the three clients against one server: LABELPREFIX PORT PID
  bench "$1:source-d" "$2" "$3" source REUSE=1 MESSAGES="$MESSAGES"
  bench "$1:pipeline-n" "$2" "$3" pipeline MESSAGES="$MESSAGES" EXTRA=-n
  bench "$1:pipeline" "$2" "$3" pipeline MESSAGES="$PMESSAGES"
}

# ---- 1. throughput: sink mode vs smtp-sink ------------------------------------------------
[[ "$SINK" == 1 ]] || SHARDS_SINK=""
for shards in ${SHARDS_SINK-$SHARDS}; do
  ec_start "$shards" --set 'smtp.mode="sink"'
  sink_pid=$("$PA/start-smtp-sink.sh" "$sink_port" 2>>"$out.stderr" | tail -1)
  if [[ -n "$SPIN" && " $SPIN_SHARDS " == *" $shards "* ]]; then
    spin_start "$shards" --set 'smtp.mode="sink"'
  fi
  bl_log "sink mode, $shards shard(s): ecshardd pid $ec_pid, smtp-sink pid $sink_pid; $RUNS runs"
  for ((r = 1; r <= RUNS; r++)); do
    clients "ecshard-sink-$shards" "$ec_port" "$ec_pid"
    if [[ -n "$spin_pid" ]]; then clients "ecshard-spin-$shards" "$spin_port" "$spin_pid"; fi
    clients "smtp-sink" "$sink_port" "$sink_pid"
  done
  if [[ -n "$spin_pid" ]]; then
    # What the polling trades: context switches for system calls, both per message.
    for who in "ecshard-sink-$shards:$ec_pid:$ec_port" "ecshard-spin-$shards:$spin_pid:$spin_port"; do
      IFS=: read -r name pid port <<<"$who"
      LABEL="$name:source-d-s$SESSIONS" "$PA/syscall-count.sh" "$pid" "$MESSAGES" -- \
        "$smtp_source" -d -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" "127.0.0.1:$port" 2>>"$out.stderr" |
        tee -a "$out" >/dev/null || true
    done
    "$PA/stop-server.sh" "$spin_pid" >/dev/null 2>&1 || true
    spin_pid=""
  fi
  ec_stop
  "$PA/stop-server.sh" "$sink_pid" >/dev/null 2>&1 || true
  sink_pid=""
done

# ---- 2. spool mode ---------------------------------------------------------------------
[[ "$SPOOL" == 1 ]] || SHARDS_SPOOL=""
for shards in ${SHARDS_SPOOL-$SHARDS}; do
  spool="$PA_RUN/spool-$shards"
  bl_log "spool mode, $shards shard(s), spool $spool; $RUNS runs"
  for ((r = 1; r <= RUNS; r++)); do
    rm -rf "$spool"
    ec_start "$shards" --set "smtp.spool_dir=\"$spool\""
    bench "ecshard-spool-$shards:source-d" "$ec_port" "$ec_pid" source REUSE=1 MESSAGES="$SPOOL_MESSAGES"
    bench "ecshard-spool-$shards:pipeline" "$ec_port" "$ec_pid" pipeline MESSAGES="$SPOOL_MESSAGES"
    if ((r == 1)); then
      # fsyncs per message, counted by strace over a pipelined run.
      STRACE=1 LABEL="ecshard-spool-$shards:fsync" "$PA/syscall-count.sh" "$ec_pid" auto -- \
        "$pipeline" -s "$SESSIONS" -m 2000 -l "$SIZE" "127.0.0.1:$ec_port" 2>>"$out.stderr" |
        tee -a "$out" >/dev/null || true
    fi
    n=$(find "$spool/new" -type f | wc -l)
    echo "spool-files label=ecshard-spool-$shards run=$r files=$n expected=$((2 * SPOOL_MESSAGES + (r == 1 ? 2000 : 0)))" >>"$out"
    ec_stop
  done
  rm -rf "$spool"
done

# ---- 3. cost per message on one shard ------------------------------------------------------
if [[ "$COST" == 1 ]]; then
  bl_log "syscalls per message"
  ec_start 1 --set 'smtp.mode="sink"'
  sink_pid=$("$PA/start-smtp-sink.sh" "$sink_port" 2>>"$out.stderr" | tail -1)
  for who in ec sink; do
    if [[ $who == ec ]]; then pid=$ec_pid port=$ec_port name=ecshard-sink-1; else pid=$sink_pid port=$sink_port name=smtp-sink; fi
    LABEL="$name:source-d-s1" "$PA/syscall-count.sh" "$pid" 20000 -- \
      smtp-source -d -s 1 -m 20000 -l "$SIZE" "127.0.0.1:$port" 2>>"$out.stderr" | tee -a "$out" >/dev/null || true
    LABEL="$name:pipeline-s1" "$PA/syscall-count.sh" "$pid" auto -- \
      "$pipeline" -s 1 -m 20000 -l "$SIZE" "127.0.0.1:$port" 2>>"$out.stderr" | tee -a "$out" >/dev/null || true
    LABEL="$name:pipeline-s$SESSIONS" "$PA/syscall-count.sh" "$pid" auto -- \
      "$pipeline" -s "$SESSIONS" -m 20000 -l "$SIZE" "127.0.0.1:$port" 2>>"$out.stderr" | tee -a "$out" >/dev/null || true
  done
  ec_stop
  "$PA/stop-server.sh" "$sink_pid" >/dev/null 2>&1 || true
  sink_pid=""

  bl_log "instructions per message (valgrind), lock-step"
  # shellcheck disable=SC2046
  KIND=smtp LABEL=ecshard-sink-1:source-d-s1 "$PA/instr-per-request.sh" "127.0.0.1:$ec_port" "$INSTR_N" -- \
    $(ec_cmd 1 --set 'smtp.mode="sink"') 2>>"$out.stderr" | tee -a "$out" >/dev/null || true
  USEROPT=()
  [[ $EUID -eq 0 ]] && USEROPT=(-u nobody)
  KIND=smtp LABEL=smtp-sink:source-d-s1 "$PA/instr-per-request.sh" "127.0.0.1:$sink_port" "$INSTR_N" -- \
    "$(command -v smtp-sink || echo /usr/sbin/smtp-sink)" "${USEROPT[@]}" -c "127.0.0.1:$sink_port" 1000 \
    2>>"$out.stderr" | tee -a "$out" >/dev/null || true

  # The same method (Ir of WARM+N messages minus Ir of WARM) with the PIPELINING client.
  instr_pipeline() { # LABEL PORT -- CMD...
    local label=$1 port=$2 ir=() count vpid log
    shift 3
    for count in 500 $((500 + INSTR_N)); do
      log="$PA_RUN/vg-$label-$count"
      rm -f "$log".*
      valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        --log-file="$log.%p" "$@" </dev/null >/dev/null 2>&1 &
      vpid=$!
      pa_wait_port 127.0.0.1 "$port" 60 || bl_die "server under valgrind did not listen"
      timeout 300 "$pipeline" -s 1 -m "$count" -l "$SIZE" "127.0.0.1:$port" >/dev/null 2>&1 || true
      pa_stop_pid "$vpid" 60
      sleep 0.5
      ir+=("$(grep -h 'I *refs:' "$log".* | awk '{gsub(",", "", $NF); s += $NF} END {printf "%.0f", s}')")
    done
    echo "instr-per-request label=$label kind=smtp-pipeline n=$INSTR_N ir_run1=${ir[0]} ir_run2=${ir[1]} instructions_per_request=$(((ir[1] - ir[0]) / INSTR_N))" >>"$out"
  }
  bl_log "instructions per message (valgrind), PIPELINING"
  # shellcheck disable=SC2046
  instr_pipeline ecshard-sink-1:pipeline-s1 "$ec_port" -- $(ec_cmd 1 --set 'smtp.mode="sink"')
  instr_pipeline smtp-sink:pipeline-s1 "$sink_port" -- \
    "$(command -v smtp-sink || echo /usr/sbin/smtp-sink)" "${USEROPT[@]}" -c "127.0.0.1:$sink_port" 1000
fi
bl_load_note "$out"

summarize "$out"
if [[ "${UPDATE_DOCS:-0}" == 1 ]]; then
  mkdir -p "$BL_ROOT/docs/perf"
  cp "$RESULTS/smtp-$stamp.svg" "$BL_ROOT/docs/perf/smtp.svg"
fi
echo
echo "raw results: $out; tables: $RESULTS/smtp-$stamp.md; plot: $RESULTS/smtp-$stamp.svg"
