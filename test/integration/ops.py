"""Operating ecshardd: the admin listener (GET /metrics, /stats, /health), the console
through the real ecshard-console client, SIGHUP reload, SIGUSR1 log reopen, and reading
the metrics while echo clients keep the shards busy.

usage: ops.py ECSHARDD   (ecshard-console is looked up next to it: ../console/)"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import echo_ok, fail, free_port, stop, wait_port  # noqa: E402

PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                       r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def http_get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def metrics(port):
    status, ctype, body = http_get(port, "/metrics")
    if status != 200 or not ctype.startswith("text/plain; version=0.0.4"):
        fail("/metrics: %s %s" % (status, ctype))
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            if not re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ", line):
                fail("bad comment line: %r" % line)
            continue
        if not PROM_LINE.match(line):
            fail("not Prometheus text format 0.0.4: %r" % line)
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def console(client, sock, *cmd, expect_rc=0):
    p = subprocess.run([client, "-s", sock, *cmd], capture_output=True, text=True, timeout=30)
    if p.returncode != expect_rc:
        fail("ecshard-console %s: rc %d (want %d)\n%s%s" % (" ".join(cmd), p.returncode,
                                                             expect_rc, p.stdout, p.stderr))
    return p.stdout


def wait_for(pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    fail("timed out waiting for " + what)


def main():
    ecshardd = sys.argv[1]
    client = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ecshardd))),
                          "console", "ecshard-console")
    if not os.access(client, os.X_OK):
        fail("no ecshard-console at " + client)
    tmp = tempfile.mkdtemp(prefix="ecshard-ops-")
    echo_port, admin_port, tcp_console_port = free_port(), free_port(), free_port()
    sock = os.path.join(tmp, "console")
    logf = os.path.join(tmp, "ecshardd.log")
    cfg = os.path.join(tmp, "ecshardd.conf")

    def write_cfg(level, echo_max, echo_listen):
        with open(cfg, "w") as f:
            f.write("""
event_loop = { concurrency = 2; };
log = { level = "%s"; file = "%s"; };
watchdog = { stall_threshold = 0.5; };
listener = {
  echo = { listen = "%s"; protocol = "echo"; max_connections = %d; };
  admin = { listen = "127.0.0.1:%d"; protocol = "admin"; idle_timeout = 5.0; };
  console = { listen = "unix:%s"; protocol = "console"; };
  badconsole = { listen = "127.0.0.1:%d"; protocol = "console"; };
};
""" % (level, logf, echo_listen, echo_max, admin_port, sock, tcp_console_port))

    write_cfg("notice", 100, "127.0.0.1:%d" % echo_port)
    proc = subprocess.Popen([ecshardd, "--config", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_port(admin_port, proc=proc)
        wait_port(echo_port, proc=proc)

        # ---- HTTP: formats, status codes -------------------------------------------
        m = metrics(admin_port)
        for name in ("ecshard_shard_iterations_total{shard=\"0\"}",
                     "ecshard_shard_iterations_total{shard=\"1\"}",
                     "ecshard_shards", "ecshard_uptime_seconds", "ecshard_sessions_active",
                     "ecshard_listener_accepted_total{listener=\"echo\",protocol=\"echo\"}"):
            if name not in m:
                fail("/metrics lacks %s" % name)
        if m["ecshard_shards"] != 2:
            fail("ecshard_shards = %s" % m["ecshard_shards"])
        status, ctype, body = http_get(admin_port, "/stats")
        doc = json.loads(body)
        if status != 200 or ctype != "application/json" or \
                doc["metrics"]["ecshard_shards"]["samples"][0]["value"] != 2:
            fail("/stats: %s %s %r" % (status, ctype, body[:200]))
        if http_get(admin_port, "/health")[:1] != (200,):
            fail("/health")
        status, _, body = http_get(admin_port, "/metrics", "HEAD")
        if status != 200 or body != b"":
            fail("HEAD /metrics: %s %r" % (status, body[:50]))
        if http_get(admin_port, "/nope")[0] != 404:
            fail("/nope is not a 404")
        if http_get(admin_port, "/metrics", "POST")[0] != 405:
            fail("POST is not a 405")
        with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
            s.sendall(b"garbage\r\n\r\n")
            if not s.recv(100).startswith(b"HTTP/1.0 400"):
                fail("a bad request line is not a 400")
        with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nX-Long: " + b"a" * 9000)
            if not s.recv(100).startswith(b"HTTP/1.0 431"):
                fail("an endless request head is not a 431")
        # The console refuses to serve a TCP listener: anyone could stop the server.
        with socket.create_connection(("127.0.0.1", tcp_console_port), timeout=5) as s:
            s.sendall(b"stats\n")
            try:
                if s.recv(100) != b"":
                    fail("the console answered on a TCP listener")
            except ConnectionResetError:
                pass

        # ---- load: echo clients on both shards while the metrics are read ------------
        stop_load = threading.Event()
        errors = []
        sent = [0]

        def client_loop():
            while not stop_load.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as s:
                        for _ in range(20):
                            if not echo_ok(s, b"x" * 100 + b"\n", timeout=5):
                                errors.append("echo failed")
                                return
                            sent[0] += 101
                except OSError as e:
                    errors.append(str(e))
                    return

        workers = [threading.Thread(target=client_loop) for _ in range(4)]
        for w in workers:
            w.start()
        before = metrics(admin_port)
        reads = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            metrics(admin_port)
            json.loads(http_get(admin_port, "/stats")[2])
            console(client, sock, "shards")
            reads += 1
        stop_load.set()
        for w in workers:
            w.join(30)
        if errors:
            fail("echo clients: %s" % errors[:3])
        after = metrics(admin_port)
        for k in ("ecshard_shard_read_bytes_total", "ecshard_shard_written_bytes_total"):
            if total(after, k) - total(before, k) <= 0:
                fail("%s did not grow under load" % k)
        if total(after, "ecshard_shard_read_bytes_total") < sent[0]:
            fail("read bytes %d < bytes the clients sent %d" %
                 (total(after, "ecshard_shard_read_bytes_total"), sent[0]))
        acc = "ecshard_listener_accepted_total{listener=\"echo\",protocol=\"echo\"}"
        if after[acc] <= before[acc]:
            fail("accepted did not grow under load")
        for i in (0, 1):
            k = "ecshard_shard_iterations_total{shard=\"%d\"}" % i
            if after[k] < before[k]:
                fail("%s went back" % k)
        print("read the metrics %d times under load" % reads, flush=True)

        # ---- console ---------------------------------------------------------------
        out = console(client, sock, "help")
        for word in ("stats", "shards", "memory", "threads", "listeners", "log level",
                     "shutdown"):
            if word not in out:
                fail("help lacks %s" % word)
        out = console(client, sock, "stats")
        if "shards 2" not in out or "version " not in out:
            fail("stats: %r" % out)
        out = console(client, sock, "threads")
        if "shard 0" not in out or "shard 1" not in out or "main" not in out:
            fail("threads: %r" % out)
        out = console(client, sock, "listeners")
        if not re.search(r"^echo\s+echo\s+[1-9]", out, re.M):
            fail("listeners: %r" % out)
        out = console(client, sock, "memory")
        if "core:event" not in out or "allocator" not in out:
            fail("memory: %r" % out)
        out = console(client, sock, "stats", "prometheus")
        if "ecshard_shards 2" not in out:
            fail("stats prometheus: %r" % out[:300])
        console(client, sock, "log", "level", "NET", "debug")
        out = console(client, sock, "log", "level")
        if "NET=debug" not in out or "SHARD=notice" not in out:
            fail("log level: %r" % out)
        console(client, sock, "log", "level", "LOUD", expect_rc=1)
        console(client, sock, "frobnicate", expect_rc=1)
        out = console(client, sock, "timing", "on")
        if "ok" not in out:
            fail("timing on: %r" % out)
        # Interactive use: several commands on one connection.
        p = subprocess.run([client, "-s", sock], input="stats\nshards\nquit\n",
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0 or "shards 2" not in p.stdout or "iterations" not in p.stdout:
            fail("interactive console: rc %d %r" % (p.returncode, p.stdout))

        # ---- SIGHUP: what changes and what is reported -----------------------------
        write_cfg("info", 3, "127.0.0.1:%d" % free_port())
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in open(logf).read(), "the reload")
        log = open(logf).read()
        if "the console protocol serves only unix: addresses" not in log:
            fail("the refused TCP console is not logged")
        if "listener.echo.max_connections: 100 -> 3 (applied)" not in log:
            fail("max_connections change not applied:\n" + log[-2000:])
        if not re.search(r"listener\.echo\.listen: .* NOT applied: it takes effect only after "
                         r"a restart", log):
            fail("listen change not reported:\n" + log[-2000:])
        m = metrics(admin_port)
        if m["ecshard_config_reloads_total"] != 1:
            fail("reloads_total = %s" % m["ecshard_config_reloads_total"])
        # The new limit holds: with 3 sessions open a fourth is refused.
        held = [socket.create_connection(("127.0.0.1", echo_port), timeout=5) for _ in range(3)]
        for s in held:
            if not echo_ok(s):
                fail("a session under the new limit does not echo")
        extra = socket.create_connection(("127.0.0.1", echo_port), timeout=5)
        extra.settimeout(5)
        try:
            if extra.recv(10) != b"":
                fail("the fourth connection was served")
        except ConnectionResetError:
            pass
        extra.close()
        for s in held:
            s.close()
        # A broken file is refused and counted; the server keeps serving.
        with open(cfg, "w") as f:
            f.write("log = { level = \"loud\"; };\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metrics(admin_port)["ecshard_config_reload_failures_total"] == 1,
                 "the refused reload")
        console(client, sock, "reload")  # the same request through the console
        wait_for(lambda: metrics(admin_port)["ecshard_config_reload_failures_total"] == 2,
                 "the console's reload")

        # ---- SIGUSR1: log rotation ----------------------------------------------------
        os.rename(logf, logf + ".1")
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(logf), "the reopened log file")
        console(client, sock, "log", "level", "CONFIG", "notice")
        wait_for(lambda: "console: log level CONFIG set to notice" in open(logf).read(),
                 "a line in the new log file")

        # ---- shutdown from the console ------------------------------------------------
        console(client, sock, "shutdown")
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            fail("console shutdown did not stop the server")
        err = proc.stderr.read()
        if rc != 0:
            fail("ecshardd exited with %d:\n%s" % (rc, err))
        if "ERROR: ThreadSanitizer" in err or "ERROR: AddressSanitizer" in err:
            fail("sanitizer report:\n" + err)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok")


main()
