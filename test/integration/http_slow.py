#!/usr/bin/env python3
"""Slow clients against ecshardd's http module, bounded in time: Debian's slowhttptest in
slowloris (-H) and slow-body (-B) modes, and our own slowloris client. With header and
body timeouts of 2 s, every slow connection must be answered 408 or closed by the server
well before the attack ends, while ordinary requests keep being served.

Usage: http_slow.py PATH/TO/ecshardd"""
import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fail  # noqa: E402
from http_common import Server  # noqa: E402

TIMEOUT = 2.0


def probe(srv):
    """One GET /hello on a fresh connection; True if answered within 2 s."""
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n")
    except OSError:
        return False


def slowhttptest(srv, mode, conns, length, extra):
    tmp = tempfile.mkdtemp(prefix="it_http_slow_")
    prefix = os.path.join(tmp, "r")
    cmd = ["slowhttptest", mode, "-c", str(conns), "-r", str(conns), "-i", "1", "-l", str(length),
           "-p", "2", "-g", "-o", prefix, "-u", srv.url("/hello")] + extra
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp)
    probes = []
    deadline = time.monotonic() + length + 30
    while p.poll() is None and time.monotonic() < deadline:
        probes.append(probe(srv))
        time.sleep(0.5)
    if p.poll() is None:
        p.kill()
        p.wait()
        fail("slowhttptest %s did not end" % mode)
    out = p.stdout.read().decode(errors="replace")
    with open(prefix + ".csv") as f:
        rows = [r for r in csv.reader(f)][1:]
    shutil.rmtree(tmp)
    if not probes or not all(probes):
        fail("slowhttptest %s: ordinary requests failed during the attack (%d of %d ok)"
             % (mode, sum(probes), len(probes)))
    # columns: seconds, closed, pending, connected, ... (availability: our probes above)
    peak = max(int(r[3]) for r in rows)
    ended = re.search(r"Test ended on (\d+)(st|nd|rd|th) second", out)
    if "No open connections left" not in out or ended is None:
        print(out)
        fail("slowhttptest %s: connections still open at the end: %r" % (mode, rows[-3:]))
    closed_by = int(ended.group(1))
    if closed_by >= length:
        fail("slowhttptest %s: the server took the whole test (%d s) to close them" % (mode, closed_by))
    print("ok slowhttptest %s: %d connections, peak %d connected, all closed by the server after %d s, "
          "%d probes answered" % (mode, conns, peak, closed_by, len(probes)), flush=True)


def own_slowloris(srv, n=100):
    """n connections that each send a header line every 0.5 s and never finish the head."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
        socks.append(s)
    t0 = time.monotonic()
    answered = {}
    k = 0
    while len(answered) < n and time.monotonic() - t0 < TIMEOUT + 8:
        for i, s in enumerate(socks):
            if i in answered:
                continue
            try:
                s.sendall(b"X-%d: %d\r\n" % (k, k))
            except OSError:
                answered[i] = b"closed"
                continue
            s.setblocking(False)
            try:
                data = s.recv(4096)
                answered[i] = data if data else b"closed"
            except BlockingIOError:
                pass
            except OSError:
                answered[i] = b"closed"
            s.setblocking(True)
        k += 1
        if not probe(srv):
            fail("own slowloris: an ordinary request failed during the attack")
        time.sleep(0.5)
    took = time.monotonic() - t0
    for s in socks:
        s.close()
    if len(answered) < n:
        fail("own slowloris: %d of %d slow connections still open after %.1f s" % (n - len(answered), n, took))
    got408 = sum(1 for v in answered.values() if v.startswith(b"HTTP/1.1 408 "))
    if got408 == 0:
        fail("own slowloris: no connection got a 408: %r" % list(answered.values())[:3])
    print("ok own slowloris: %d connections ended after %.1f s (%d with a 408 we read)" % (n, took, got408),
          flush=True)


def main():
    if len(sys.argv) != 2:
        fail("usage: http_slow.py ECSHARDD")
    sets = ["http.header_timeout=%.1f" % TIMEOUT, "http.body_timeout=%.1f" % TIMEOUT]
    srv = Server(sys.argv[1], sets, shards=2)
    try:
        own_slowloris(srv)
        if shutil.which("slowhttptest"):
            slowhttptest(srv, "-H", 300, 10, ["-x", "24"])
            slowhttptest(srv, "-B", 300, 10, ["-s", "8192", "-x", "24"])
        else:
            print("note: slowhttptest not installed (apt-get install slowhttptest); only our own client ran")
        if not probe(srv):
            fail("not serving after the slow clients")
    finally:
        srv.stop()
    print("PASS")


if __name__ == "__main__":
    main()
