"""ecshardd under a low RLIMIT_NOFILE: when accept4 fails with EMFILE the acceptor
pauses (no busy loop), open sessions keep being served, and once descriptors free up
the connections still queued in the kernel are accepted and served.

usage: emfile.py ECSHARDD"""
import os
import resource
import select
import socket
import sys
import tempfile
import time

from common import only_listeners, echo_ok, fail, free_port, stop, wait_port

import subprocess

HEADROOM = 32 # descriptors the server may open beyond what it uses when idle
CLIENTS = 120


def served_now(socks, wait):
    """The sockets among `socks` that echo a ping within `wait` seconds (all checked at
    once: a connection still in the kernel's accept queue simply does not answer)."""
    pending = {}
    for s in socks:
        s.setblocking(False)
        try:
            s.send(b"ping\n")
            pending[s] = b""
        except OSError:
            pass
    ok = []
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for s in ready:
            try:
                chunk = s.recv(16)
            except OSError:
                chunk = b""
            if not chunk:
                del pending[s]
                continue
            pending[s] += chunk
            if pending[s] == b"ping\n":
                ok.append(s)
                del pending[s]
    for s in socks:
        s.setblocking(True)
    return ok


def main():
    ecshardd = sys.argv[1]
    port = free_port()

    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [ecshardd, "--shards", "1",
         "--set", 'listener.echo.listen="127.0.0.1:%d"' % port,
         *only_listeners(ecshardd, "echo"),
         "--set", "limits.accept_retry_delay=0.05",
         "--set", 'log.level="warning"'],
        stderr=log)
    try:
        wait_port(port, proc=proc)
        # The limit is set on the running server, relative to what it already uses, so
        # that sanitizer runtimes (which open descriptors of their own) get the same test.
        limit = len(os.listdir("/proc/%d/fd" % proc.pid)) + HEADROOM
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
        clients = []
        for _ in range(CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        # The server cannot hold all of them: some are served, the rest wait in the queue.
        served = served_now(clients, 1.0)
        waiting = [c for c in clients if c not in served]
        if not served:
            fail("no connection was served under the descriptor limit")
        if not waiting:
            fail("all %d connections were served under a limit of %d descriptors"
                 % (CLIENTS, limit))
        print("served %d of %d under RLIMIT_NOFILE=%d" % (len(served), CLIENTS, limit))
        # Open sessions are still served while accepting is paused.
        if not echo_ok(served[0], b"again\n", timeout=2):
            fail("an open session stopped being served during the EMFILE pause")
        # Free descriptors in rounds: every queued connection is accepted eventually.
        rounds = 0
        while waiting:
            rounds += 1
            if rounds > 20:
                fail("%d connections were never served" % len(waiting))
            for c in served:
                c.close()
            served = served_now(waiting, 1.0)
            waiting = [c for c in waiting if c not in served]
        for c in served:
            c.close()
        if proc.poll() is not None:
            fail("ecshardd died")
    finally:
        rc = stop(proc)
    log.seek(0)
    err = log.read()
    if "pausing accepts" not in err:
        fail("no 'pausing accepts' line was logged:\n" + err)
    if rc != 0:
        fail("ecshardd exited with %d:\n%s" % (rc, err))
    print("ok: EMFILE paused and resumed accepting; exit status 0")


if __name__ == "__main__":
    main()
