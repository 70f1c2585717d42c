"""ecshard-load against real servers on loopback: ecshardd's echo listener, a small Python
HTTP/1.1 server, a small Python SMTP sink (PIPELINING) and, when installed, nginx.

Checks what can be counted, never how fast: the number of completed requests equals the
request limit, the servers saw exactly that many requests or messages, byte counts match,
the JSON parses and has its fields, errors are counted as errors, and the loopback guard and
the argument checks refuse what they should.

usage: load.py ECSHARDD ECSHARD-LOAD
"""
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fail, free_port, only_listeners, stop, wait_port  # noqa: E402

ECSHARDD, LOAD = sys.argv[1], sys.argv[2]
TIMEOUT = 120


def run_load(*args, expect_rc=0):
    p = subprocess.run([LOAD, *args], capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != expect_rc:
        fail("ecshard-load %s: exit %d (wanted %d)\nstdout: %s\nstderr: %s"
             % (" ".join(args), p.returncode, expect_rc, p.stdout, p.stderr))
    return p


def run_json(*args):
    p = run_load(*args, "--json", "--progress", "0")
    try:
        r = json.loads(p.stdout)
    except ValueError as e:
        fail("ecshard-load printed no JSON (%s): %r" % (e, p.stdout))
    for k in ("requests", "requests_per_s", "latency_us", "errors", "bytes_in", "bytes_out"):
        if k not in r:
            fail("JSON without '%s': %s" % (k, p.stdout))
    for k in ("p50", "p90", "p99", "p999", "max", "mean", "samples"):
        if k not in r["latency_us"]:
            fail("latency without '%s': %s" % (k, p.stdout))
    lu = r["latency_us"]
    if r["requests"] and not (0 < lu["p50"] <= lu["p90"] <= lu["p99"] <= lu["p999"] <= lu["max"]):
        fail("percentiles out of order: %s" % lu)
    return r


def check(cond, msg, r):
    if not cond:
        fail("%s: %s" % (msg, json.dumps(r)))


# ---- echo: ecshardd ----------------------------------------------------------------------

def test_echo():
    port = free_port()
    srv = subprocess.Popen([ECSHARDD, "--shards", "2", "--set", 'listener.echo.listen="127.0.0.1:%d"' % port,
                            *only_listeners(ECSHARDD, "echo"), "--set", 'log.level="warning"'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=srv)
        target = "127.0.0.1:%d" % port
        # closed loop, 2 shards x 6 connections, 3 blocks in flight on each
        r = run_json("--target", target, "--shards", "2", "--conns", "6", "--depth", "3",
                     "--size", "100", "--requests", "3000", "--duration", "60")
        check(r["requests"] == 3000 and r["latency_us"]["samples"] == 3000, "echo: wrong count", r)
        check(r["errors"] == 0 and r["connect_errors"] == 0 and r["protocol_errors"] == 0, "echo: errors", r)
        check(r["bytes_out"] == 300000 and r["bytes_in"] == 300000, "echo: byte counts", r)
        check(r["loop"] == "closed" and not r["coordinated_omission_corrected"], "echo: loop", r)
        # a large block that takes several reads and writes
        r = run_json("--target", target, "--conns", "2", "--size", "200000", "--requests", "20")
        check(r["requests"] == 20 and r["bytes_in"] == 4000000, "echo: large blocks", r)
        # open loop at a fixed rate: latency from the intended send time
        r = run_json("--target", target, "--conns", "4", "--rate", "2000", "--requests", "400")
        check(r["requests"] == 400 and r["loop"] == "open" and r["coordinated_omission_corrected"],
              "echo: open loop", r)
        # a duration bound with progress lines
        p = run_load("--target", target, "--conns", "2", "--duration", "1.5", "--progress", "0.5")
        if "req/s" not in p.stderr or "requests in" not in p.stdout:
            fail("no progress lines or summary: %r %r" % (p.stdout, p.stderr))
    finally:
        rc = stop(srv)
    if rc != 0:
        fail("ecshardd exited with %d:\n%s" % (rc, srv.stdout.read().decode(errors="replace")))


# ---- HTTP: a Python server, then nginx -----------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def do_GET(self):
        with Handler.lock:
            Handler.count += 1
        body = b"hello\n" if self.path == "/hello" else b"not here\n"
        self.send_response(200 if self.path == "/hello" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class ThreadingHTTP(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def test_http_python():
    srv = ThreadingHTTP(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    target = "127.0.0.1:%d" % srv.server_address[1]
    try:
        # keep-alive with 4 pipelined requests per connection
        r = run_json("--mode", "http", "--target", target, "--conns", "3", "--depth", "4",
                     "--path", "/hello", "--requests", "600")
        check(r["requests"] == 600 and r["non2xx"] == 0 and r["errors"] == 0, "http: counts", r)
        check(r["reconnects"] == 0, "http: keep-alive connections were not kept", r)
        if Handler.count != 600:
            fail("the HTTP server saw %d requests, not 600" % Handler.count)
        # answers that are not 2xx are counted as such
        r = run_json("--mode", "http", "--target", target, "--path", "/missing", "--requests", "50")
        check(r["requests"] == 50 and r["non2xx"] == 50, "http: non-2xx count", r)
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_nginx():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        print("nginx not installed: its part is skipped")
        return
    port = free_port()
    d = tempfile.mkdtemp(prefix="it-load-nginx-")
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off; master_process off; worker_processes 1; pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 256; }
http { access_log off; client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;
  uwsgi_temp_path %s; scgi_temp_path %s; keepalive_requests 100000;
  server { listen 127.0.0.1:%d; location / { return 200 "hello\\n"; } } }
""" % (d, d, d, d, d, d, d, port))
    srv = subprocess.Popen([nginx, "-c", conf, "-p", d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=srv)
        r = run_json("--mode", "http", "--target", "127.0.0.1:%d" % port, "--shards", "2", "--conns", "8",
                     "--depth", "2", "--requests", "5000")
        check(r["requests"] == 5000 and r["non2xx"] == 0 and r["errors"] == 0, "nginx: counts", r)
    finally:
        stop(srv)
        shutil.rmtree(d, ignore_errors=True)


# ---- SMTP: a small sink that offers PIPELINING ---------------------------------------------

class SmtpSink(socketserver.StreamRequestHandler):
    messages = 0
    sessions = 0
    lock = threading.Lock()

    def handle(self):
        w = self.wfile.write
        w(b"220 sink.test ESMTP\r\n")
        with SmtpSink.lock:
            SmtpSink.sessions += 1
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                w(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif cmd in (b"MAIL", b"RCPT"):
                w(b"250 ok\r\n")
            elif cmd == b"DATA":
                w(b"354 go\r\n")
                while True:
                    l2 = self.rfile.readline()
                    if not l2:
                        return
                    if l2 == b".\r\n":
                        break
                with SmtpSink.lock:
                    SmtpSink.messages += 1
                w(b"250 queued\r\n")
            elif cmd == b"QUIT":
                w(b"221 bye\r\n")
                return
            else:
                w(b"500 what\r\n")


class ThreadingTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def test_smtp():
    srv = ThreadingTCP(("127.0.0.1", 0), SmtpSink)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    target = "127.0.0.1:%d" % srv.server_address[1]
    try:
        for pipelining, n in (("on", 140), ("off", 60)):
            before = SmtpSink.messages
            r = run_json("--mode", "smtp", "--target", target, "--conns", "3", "--size", "700",
                         "--msgs-per-session", "7", "--pipelining", pipelining, "--requests", str(n))
            check(r["requests"] == n and r["errors"] == 0 and r["protocol_errors"] == 0, "smtp: counts", r)
            check(r["sessions"] >= n // 7, "smtp: sessions", r)
            if SmtpSink.messages - before != n:
                fail("the sink received %d messages, not %d" % (SmtpSink.messages - before, n))
    finally:
        srv.shutdown()
        srv.server_close()


# ---- guards --------------------------------------------------------------------------------

def test_guards():
    p = run_load("--target", "192.0.2.1:80", "--requests", "1", expect_rc=2)
    if "refusing non-loopback" not in p.stderr:
        fail("no loopback refusal: %r" % p.stderr)
    run_load("--target", "127.0.0.1:9", "--duration", "0", expect_rc=2)  # no bound
    run_load("--target", "127.0.0.1:9", "--mode", "gopher", expect_rc=2)
    run_load("--target", "127.0.0.1:9", "--depth", "0", expect_rc=2)
    # nothing listens: it gives up with an error instead of reporting numbers
    port = free_port()
    p = run_load("--target", "127.0.0.1:%d" % port, "--duration", "5", "--progress", "1", expect_rc=1)
    if "no connection" not in p.stderr:
        fail("no 'no connection' message: %r" % p.stderr)


test_guards()
test_echo()
test_http_python()
test_http_nginx()
test_smtp()
print("PASS")
