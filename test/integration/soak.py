"""Soak: ecshardd under mixed load with connection churn for a bounded time, then checks that
it did not drift. CI runs it for ECSHARD_SOAK_SECONDS (default 45); a longer soak is the
same command with a larger value, e.g. ECSHARD_SOAK_SECONDS=1800.

Load, all at once, on one 2-shard ecshardd (each listener on its own free port):
- HTTP: ecshard-load, keep-alive and pipelined GET /hello, plus Python clients opening a new
  connection per request (churn) and fetching a static file;
- HTTPS: a new TLS connection per request (full handshakes), Python's ssl module;
- SMTP in spool mode: smtplib sessions, each message's "queued as ID" recorded, so every
  message is written by a pool worker and fsynced (cross-thread jobs waking sessions);
- echo: connections opened and abandoned, which the 2 s idle timeout closes.

Checks: every client request that should succeed did (the load provokes no errors of its
own); after the load, open descriptors return to their level before it and resident memory
grows by less than a bound between the first and the last third of the run (allocator
caches fill early, then must stay flat); every acknowledged SMTP message is complete in the
spool; the server stops cleanly on SIGTERM.

usage: soak.py ECSHARDD ECSHARD_LOAD"""
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# CHECK_RSS: sanitizer builds hold freed memory in quarantine (ASan) or shadow it (TSan), so
# resident memory says nothing there; LSan checks leaks at exit instead.
from common import CHECK_RSS, fail, free_port, only_listeners, stop, wait_port

SECONDS = float(os.environ.get("ECSHARD_SOAK_SECONDS", "45"))
RSS_GROWTH_MAX = 16 * 1024 * 1024  # bytes between the first and last third of the run


def rss_and_fds(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.bad = {}

    def add(self, kind, good, why=""):
        with self.lock:
            d = self.ok if good else self.bad
            d[kind] = d.get(kind, 0) + 1
            if not good and d[kind] <= 3:
                print("soak: %s failed: %s" % (kind, why), flush=True)


def http_churn(port, until, c):
    while time.monotonic() < until:
        for path, want in (("/hello", b"hello\n"), ("/", None)):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
                    body = r.read()
                    c.add("http-churn", r.status == 200 and (want is None or body == want),
                          "status %d" % r.status)
            except OSError as e:
                c.add("http-churn", False, repr(e))


def https_churn(port, until, c):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    got = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
            c.add("https", got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello\n"), got[:80])
        except (OSError, ssl.SSLError) as e:
            c.add("https", False, repr(e))


def smtp_sessions(port, until, c, acked, lock, n):
    i = 0
    while time.monotonic() < until:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
                s.ehlo("soak.example")
                for _ in range(5):
                    i += 1
                    body = "Subject: soak %d-%d\r\n\r\n%s\r\n" % (n, i, ("line %d\r\n" % i) * 20)
                    s.mail("a@soak.example")
                    s.rcpt("b@soak.example")
                    code, resp = s.data(body.encode())
                    good = code == 250 and b"queued as " in resp
                    if good:
                        with lock:
                            acked.append((resp.split(b"queued as ")[1].strip().decode(), n, i))
                    c.add("smtp", good, "%s %s" % (code, resp))
        except (OSError, smtplib.SMTPException) as e:
            c.add("smtp", False, repr(e))


def echo_abandon(port, until, c):
    held = []
    while time.monotonic() < until:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"x\n")
            c.add("echo", s.recv(2) == b"x\n", "no echo")
            held.append(s)  # left idle: the server's idle timeout closes it
        except OSError as e:
            c.add("echo", False, repr(e))
        if len(held) > 50:
            held.pop(0).close()
        time.sleep(0.02)
    for s in held:
        s.close()


def main():
    ecshardd, load = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ecshard-soak-")
    ports = {name: free_port() for name in ("http", "https", "smtp", "echo")}
    args = [ecshardd, "--shards", "2", *only_listeners(ecshardd, "http", "https", "smtp", "echo"),
            "--set", 'listener.http.listen="127.0.0.1:%d"' % ports["http"],
            "--set", 'listener.https.listen="127.0.0.1:%d"' % ports["https"],
            "--set", 'listener.https.tls.key="%s/selfsigned.pem"' % tmp,
            "--set", 'listener.smtp.listen="127.0.0.1:%d"' % ports["smtp"],
            "--set", 'listener.smtp.tls.key="%s/selfsigned.pem"' % tmp,
            "--set", 'listener.echo.listen="127.0.0.1:%d"' % ports["echo"],
            "--set", "listener.echo.idle_timeout=2.0",
            "--set", 'smtp.spool_dir="%s/spool"' % tmp,
            "--set", 'log.level="warning"']
    log = open(os.path.join(tmp, "ecshardd.log"), "w+")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    samples = []
    try:
        for p in ports.values():
            wait_port(p, 20, proc)
        time.sleep(0.5)
        base_rss, base_fds = rss_and_fds(proc.pid)
        start = time.monotonic()
        until = start + SECONDS
        c = Counter()
        acked, lock = [], threading.Lock()
        loads = [subprocess.Popen([load, "--mode", "http", "--target", "127.0.0.1:%d" % ports["http"],
                                   "--path", "/hello", "--shards", "1", "--conns", "16", "--depth", d,
                                   "--duration", "%d" % max(1, int(SECONDS)), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for d in ("1", "8")]
        threads = [threading.Thread(target=http_churn, args=(ports["http"], until, c)),
                   threading.Thread(target=https_churn, args=(ports["https"], until, c)),
                   threading.Thread(target=echo_abandon, args=(ports["echo"], until, c))]
        threads += [threading.Thread(target=smtp_sessions, args=(ports["smtp"], until, c, acked, lock, n))
                    for n in range(3)]
        for t in threads:
            t.start()
        while time.monotonic() < until:
            samples.append((time.monotonic() - start,) + rss_and_fds(proc.pid))
            time.sleep(1)
        for t in threads:
            t.join(60)
        load_out = [l.communicate(timeout=60)[0] for l in loads]
        # Idle connections time out (2 s), keep-alive ones were closed by their clients.
        time.sleep(3.5)
        end_rss, end_fds = rss_and_fds(proc.pid)
    finally:
        rc = stop(proc, 30)
    log.seek(0)
    text = log.read()
    if rc != 0:
        fail("ecshardd exited with %d:\n%s" % (rc, text[-3000:]))
    if c.bad:
        fail("client failures %r (successes %r)" % (c.bad, c.ok))
    reqs = 0
    for out in load_out:
        try:
            r = json.loads(out)
        except ValueError:
            fail("ecshard-load output is not JSON: %r" % out[:300])
        errors = r.get("errors", 0)
        if isinstance(errors, dict):
            errors = sum(errors.values())
        if errors:
            fail("ecshard-load saw errors: %r" % r)
        reqs += int(r.get("requests", 0))
    if reqs == 0:
        fail("ecshard-load completed no request")
    third = max(1, len(samples) // 3)
    early = sorted(s[1] for s in samples[:third])[third // 2]
    late = sorted(s[1] for s in samples[-third:])[third // 2]
    print("soak: %.0f s; load %d HTTP requests; clients %r; %d SMTP messages acknowledged; "
          "RSS %d -> %d (first third median %d, last third median %d) bytes; fds %d -> %d" %
          (SECONDS, reqs, c.ok, len(acked), base_rss, end_rss, early, late, base_fds, end_fds),
          flush=True)
    if CHECK_RSS and late - early > RSS_GROWTH_MAX:
        fail("resident memory grew by %d bytes between the first and last third" % (late - early))
    if end_fds > base_fds + 2:
        fail("descriptors did not return: %d before the load, %d after" % (base_fds, end_fds))
    new = os.path.join(tmp, "spool", "new")
    stored = {}
    for name in os.listdir(new):
        with open(os.path.join(new, name), "rb") as f:
            stored[name] = f.read()
    for qid, n, i in acked:
        hit = [name for name in stored if qid in name]
        if not hit:
            fail("acknowledged message %s is not in the spool" % qid)
        data = stored[hit[0]]
        if (b"Subject: soak %d-%d\r\n" % (n, i)) not in data or \
                data.count(b"line %d\r\n" % i) != 20:
            fail("acknowledged message %s is incomplete in the spool:\n%r" % (qid, data[-300:]))
    if len(stored) < len(acked):
        fail("spool holds %d messages, %d were acknowledged" % (len(stored), len(acked)))
    print("ok")


if __name__ == "__main__":
    main()
