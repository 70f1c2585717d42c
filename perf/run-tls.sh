#!/usr/bin/env bash
# perf/run-tls.sh - TLS handshakes/s and bulk TLS throughput: ecshard next to nginx.
#
#   perf/run-tls.sh     # BUILD=build RUNS=5 WORKERS=1 DURATION=5 CONNS=64 BULK_CONNS=4
#   INSTR=1 perf/run-tls.sh   # also user-space instructions per handshake (valgrind)
#
# Both servers get the same EC P-256 certificate (generated here), the same worker count
# (ecshard shards = nginx worker processes = WORKERS), TLS 1.2-1.3 with the same cipher
# lists, and answer the same two HTTP requests over TLS:
#   GET /     "hello\n"                 - with "Connection: close", every request is a new
#                                         TCP connection and a full TLS handshake
#   GET /big  1 MiB (BIG bytes)          - keep-alive, bulk encryption
# ecshard side: perf/bench_tls_server.c (the framework's `tls` listener section, a minimal
# HTTP answerer). nginx side: perf/conf/nginx-tls.conf.in, started here (nginx from
# ../shared/perf-anchors' install; its start-nginx.sh has no TLS server block).
#
# Session tickets are OFF on both servers during the run so that every new connection is
# a full handshake (wrk would otherwise resume some sessions; bench_tls_server prints its
# full/resumed counts at exit to show it did not). The client is wrk (-t1): on a 2-CPU
# machine one CPU serves, one loads. Runs alternate between the servers, RUNS times; the
# table shows medians (min-max) and the server's CPU per request (user+sys from /proc,
# whole process tree). Everything stays on loopback; each wrk run is bounded (-d).
#
# INSTR=1 adds the stable figure: each server runs alone (one process, one worker) under
# valgrind's cachegrind twice, for INSTR_WARM and INSTR_WARM+INSTR_N full handshakes by
# perf/tls_handshakes.py (TLS 1.3, one GET / per connection); the difference divided by
# INSTR_N is the instructions per handshake, start-up and shutdown cancelled out.
set -u
# shellcheck source=perf/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
PA_DIR_DEFAULT="$BL_ROOT/../shared/perf-anchors"
[[ -d "$PA_DIR_DEFAULT" ]] || PA_DIR_DEFAULT=/work/shared/perf-anchors
PA="${PA:-$PA_DIR_DEFAULT}"
# shellcheck source=/dev/null
source "$PA/lib.sh"

WORKERS="${WORKERS:-1}"
DURATION="${DURATION:-5}"
CONNS="${CONNS:-64}"
BULK_CONNS="${BULK_CONNS:-4}"
BIG="${BIG:-1048576}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
command -v wrk >/dev/null || bl_die "wrk is needed (apt-get install wrk)"
command -v openssl >/dev/null || bl_die "the openssl command is needed"
[[ -x "$NGINX" ]] || bl_die "nginx is needed (apt-get install nginx-light)"

bl_build bench_tls_server
ec=$(bl_bin bench_tls_server)
[[ -n "$ec" ]] || bl_die "bench_tls_server was not built"
mkdir -p "$RESULTS"
out="$RESULTS/tls-$(date -u +%Y%m%d-%H%M%S).txt"
bl_meta tls >"$out"

dir=$(mktemp -d /tmp/ecshard-perf-tls-XXXXXX)
chmod 755 "$dir" # nginx workers (user nobody) read www/ below it
ec_pid="" ng_pid=""
cleanup() {
  [[ -n "$ec_pid" ]] && pa_stop_pid "$ec_pid"
  [[ -n "$ng_pid" ]] && pa_stop_pid "$ng_pid"
  rm -rf "$dir"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  2>/dev/null || bl_die "cannot make a certificate"
mkdir -p "$dir/www" "$dir/nginx"
head -c "$BIG" /dev/zero | tr '\0' 'a' >"$dir/www/big"

# Ports the kernel hands out (bind port 0), checked free again by pa_port_free.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ec_port=$(free_port)
ng_port=$(free_port)
pa_port_free "$ec_port"
pa_port_free "$ng_port"

ec_pid=$(pa_spawn "$dir/ecshard.log" "$ec" --port "$ec_port" --cert "$dir/cert.pem" \
  --key "$dir/key.pem" --shards "$WORKERS" --big "$BIG" --tls-extra "session_tickets = false;")
pa_wait_port 127.0.0.1 "$ec_port" 10 || { cat "$dir/ecshard.log" >&2; bl_die "bench_tls_server did not start"; }

sed -e "s#@WORKERS@#$WORKERS#; s#@RUNDIR@#$dir/nginx#g; s#@PORT@#$ng_port#; s#@CERT@#$dir/cert.pem#" \
  -e "s#@KEY@#$dir/key.pem#; s#@WWW@#$dir/www#; s#ssl_session_tickets on;#ssl_session_tickets off;#" \
  "$BL_PERF/conf/nginx-tls.conf.in" >"$dir/nginx/nginx.conf"
ng_pid=$(pa_spawn "$dir/nginx/stdout.log" "$NGINX" -e "$dir/nginx/error.log" -p "$dir/nginx" -c "$dir/nginx/nginx.conf")
pa_wait_port 127.0.0.1 "$ng_port" 10 || { cat "$dir/nginx/error.log" >&2; bl_die "nginx did not start"; }
for _ in $(seq 50); do [[ $(pa_pidtree "$ng_pid" | wc -l) -ge $((WORKERS + 1)) ]] && break; sleep 0.1; done

# Sanity: both answer both requests.
for p in "$ec_port" "$ng_port"; do
  [[ "$(curl -sk "https://127.0.0.1:$p/")" == hello ]] || bl_die "port $p does not answer GET /"
  [[ "$(curl -sk "https://127.0.0.1:$p/big" | wc -c)" == "$BIG" ]] || bl_die "port $p: GET /big is not $BIG bytes"
done

cpu_ticks() {
  local s=0 p
  for p in $(pa_pidtree "$1"); do
    s=$((s + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)))
  done
  echo "$s"
}
tck=$(getconf CLK_TCK)

# wrk_run IMPL KIND PID URL CONNS [wrk args...] -> one JSON line in $out
wrk_run() {
  local impl="$1" kind="$2" pid="$3" url="$4" conns="$5" c0 c1 txt rps bps errs reqs cpu_us
  shift 5
  c0=$(cpu_ticks "$pid")
  txt=$(timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" "$@" "$url" 2>&1)
  c1=$(cpu_ticks "$pid")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$txt")
  reqs=$(awk '/requests in/ {print $1}' <<<"$txt")
  bps=$(awk '/^Transfer\/sec:/ {v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[A-Za-z]+/,"",v);
        m=(u=="GB")?1024:(u=="MB")?1:(u=="KB")?1/1024:1/1048576; printf "%.2f", v*m}' <<<"$txt")
  errs=$(awk '/Socket errors/ {print}' <<<"$txt" | tr -d '\n')
  cpu_us=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="${reqs:-0}" 'BEGIN {if (n > 0) printf "%.1f", (b - a) * 1e6 / t / n; else print "nan"}')
  printf '{"bench":"tls","impl":"%s","kind":"%s","workers":%s,"rps":%s,"mib_s":%s,"requests":%s,"server_cpu_us_per_req":%s,"errors":"%s"}\n' \
    "$impl" "$kind" "$WORKERS" "${rps:-0}" "${bps:-0}" "${reqs:-0}" "$cpu_us" "$errs" >>"$out"
  bl_log "$impl $kind: ${rps:-?} req/s, ${bps:-?} MiB/s, ${cpu_us} us CPU/req ${errs}"
}

bl_log "workers=$WORKERS duration=${DURATION}s conns=$CONNS bulk_conns=$BULK_CONNS x $RUNS runs"
# Warm-up (page cache, lazy allocations), not recorded.
wrk -t1 -c8 -d1s -H "Connection: close" "https://127.0.0.1:$ec_port/" >/dev/null 2>&1
wrk -t1 -c8 -d1s -H "Connection: close" "https://127.0.0.1:$ng_port/" >/dev/null 2>&1
for ((r = 1; r <= RUNS; r++)); do
  wrk_run ecshard handshake "$ec_pid" "https://127.0.0.1:$ec_port/" "$CONNS" -H "Connection: close"
  wrk_run nginx handshake "$ng_pid" "https://127.0.0.1:$ng_port/" "$CONNS" -H "Connection: close"
  wrk_run ecshard bulk "$ec_pid" "https://127.0.0.1:$ec_port/big" "$BULK_CONNS"
  wrk_run nginx bulk "$ng_pid" "https://127.0.0.1:$ng_port/big" "$BULK_CONNS"
done
pa_stop_pid "$ec_pid"
ec_pid=""
counts=$(grep -o 'tls_full_handshakes=[0-9]* tls_resumed=[0-9]*' "$dir/ecshard.log")

echo "TLS on $(nproc) CPUs, $WORKERS worker(s) each, EC P-256 certificate, wrk -t1;"
echo "handshake: GET / with Connection: close over $CONNS connections (a full TLS handshake"
echo "per request, tickets off); bulk: GET /big ($BIG bytes) keep-alive over $BULK_CONNS connections."
echo "ecshard session counts: $counts"
bl_load_note "$out"
awk '
  /"bench":"tls"/ {
    match($0, /"impl":"[^"]*"/); impl = substr($0, RSTART + 8, RLENGTH - 9)
    match($0, /"kind":"[^"]*"/); kind = substr($0, RSTART + 8, RLENGTH - 9)
    match($0, /"rps":[0-9.]*/); rps = substr($0, RSTART + 6, RLENGTH - 6)
    match($0, /"mib_s":[0-9.]*/); mib = substr($0, RSTART + 8, RLENGTH - 8)
    match($0, /"server_cpu_us_per_req":[0-9.a-z]*/); cpu = substr($0, RSTART + 24, RLENGTH - 24)
    k = impl SUBSEP kind; n[k]++
    R[k, n[k]] = rps; M[k, n[k]] = mib; C[k, n[k]] = cpu; keys[k] = 1
  }
  function med(A, k, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = A[k, i] + 0
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    lo = v[1]; hi = v[cnt]
    return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
  }
  END {
    printf "| server | test | req/s median (min-max) | MiB/s median (min-max) | server CPU us/req median |\n"
    printf "|---|---|---|---|---|\n"
    split("handshake bulk", kinds, " "); split("ecshard nginx", impls, " ")
    for (a = 1; a <= 2; a++) for (b = 1; b <= 2; b++) {
      k = impls[b] SUBSEP kinds[a]; if (!(k in keys)) continue
      r = med(R, k, n[k]); rl = lo; rh = hi
      m = med(M, k, n[k]); ml = lo; mh = hi
      c = med(C, k, n[k])
      printf "| %s | %s | %.0f (%.0f-%.0f) | %.1f (%.1f-%.1f) | %.0f |\n", impls[b], kinds[a], r, rl, rh, m, ml, mh, c
    }
  }' "$out"

# ---- INSTR=1: instructions per handshake ----------------------------------------------
INSTR_WARM="${INSTR_WARM:-20}"
INSTR_N="${INSTR_N:-100}"
# instr_count IMPL HANDSHAKES -> total user-space instructions of one server run
instr_count() {
  local impl="$1" n="$2" port pid log
  port=$(free_port)
  log="$dir/vg-$impl-$n.log"
  if [[ $impl == ecshard ]]; then
    pid=$(pa_spawn "$log" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
      "$ec" --port "$port" --cert "$dir/cert.pem" --key "$dir/key.pem" --shards 1 \
      --tls-extra "session_tickets = false;")
  else
    sed -e "s#@WORKERS@#1#; s#@RUNDIR@#$dir/nginx#g; s#@PORT@#$port#; s#@CERT@#$dir/cert.pem#" \
      -e "s#@KEY@#$dir/key.pem#; s#@WWW@#$dir/www#; s#ssl_session_tickets on;#ssl_session_tickets off;#" \
      -e "s#^master_process on;#master_process off;#" "$BL_PERF/conf/nginx-tls.conf.in" >"$dir/nginx/vg.conf"
    pid=$(pa_spawn "$log" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
      "$NGINX" -e "$dir/nginx/error.log" -p "$dir/nginx" -c "$dir/nginx/vg.conf")
  fi
  pa_wait_port 127.0.0.1 "$port" 60 || { cat "$log" >&2; bl_die "$impl under valgrind did not start"; }
  timeout 600 python3 "$BL_PERF/tls_handshakes.py" "$port" "$n" || bl_die "tls_handshakes.py failed"
  pa_stop_pid "$pid" 60
  sed -n 's/.*I *refs: *//p' "$log" | tr -d ','
}
if [[ "${INSTR:-0}" == 1 ]]; then
  command -v valgrind >/dev/null || bl_die "INSTR=1 needs valgrind"
  [[ -n "$ng_pid" ]] && { pa_stop_pid "$ng_pid"; ng_pid=""; }
  echo
  echo "| server | instructions per full handshake (TLS 1.3, accept + GET + close) |"
  echo "|---|---|"
  for impl in ecshard nginx; do
    a=$(instr_count "$impl" "$INSTR_WARM")
    b=$(instr_count "$impl" $((INSTR_WARM + INSTR_N)))
    per=$(awk -v a="$a" -v b="$b" -v n="$INSTR_N" 'BEGIN {printf "%.0f", (b - a) / n}')
    printf '{"bench":"tls-instr","impl":"%s","instr_per_handshake":%s}\n' "$impl" "$per" >>"$out"
    echo "| $impl | $per |"
  done
fi
echo
echo "raw results: $out"
