#!/usr/bin/env python3
"""Open N TCP connections to an echo server, echo one line on each, then hold them idle.

usage: idle_echo.py HOST PORT N READY_FILE [--hold SECONDS] [--payload BYTES]

Every connection sends `payload` bytes and reads them back before the next one opens, so
the server has run its read and write path once per connection: an idle connection that
kept a buffer from that exchange shows up in the server's RSS. When all are open, writes
"opened=<n> failed=<n> seconds=<t> first_error=<e>" to READY_FILE (as perf-anchors'
tools/idle_client.py does) and sleeps until SIGTERM/SIGINT or --hold expires.
Loopback targets only.
"""
import argparse
import os
import resource
import signal
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("ready_file")
    ap.add_argument("--hold", type=float, default=120.0)
    ap.add_argument("--payload", type=int, default=64)
    a = ap.parse_args()
    if not (a.host.startswith("127.") or a.host in ("localhost", "::1")):
        sys.exit("refusing non-loopback target")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.n + 64, hard), hard))
    stop = {"flag": False}

    def on_sig(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    payload = (b"x" * (a.payload - 1)) + b"\n"
    socks, failed, first_err = [], 0, None
    t0 = time.time()
    deadline = t0 + a.hold
    for i in range(a.n):
        if stop["flag"] or time.time() > deadline:
            break
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(10)
            if family == socket.AF_INET:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind(("127.0.0.%d" % (1 + i // 25000), 0))
            s.connect((a.host, a.port))
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before the echo")
                got += chunk
            if got != payload:
                raise ConnectionError("wrong echo")
            socks.append(s)
        except OSError as e:
            failed += 1
            if first_err is None:
                first_err = repr(e)
            s.close()
            if failed > 100 and failed > a.n // 10:
                break
    with open(a.ready_file + ".tmp", "w") as f:
        f.write("opened=%d failed=%d seconds=%.2f first_error=%s\n"
                % (len(socks), failed, time.time() - t0,
                   (first_err or "none").replace(" ", "_")))
    os.rename(a.ready_file + ".tmp", a.ready_file)
    while not stop["flag"] and time.time() < deadline:
        time.sleep(0.2)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
