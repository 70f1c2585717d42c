"""A peer that stops reading: the server must apply backpressure (stop reading the peer,
hold a bounded amount for it), close it when its timeout passes, and meanwhile keep
serving everybody else.

- echo: a client writes 16 MiB and never reads. What the server holds (its memtype live
  bytes, and its RSS where no sanitizer distorts it) grows by far less than that, another client is echoed meanwhile, and the idle timeout (1 s) ends the stalled
  connection: the writer's send fails.
- HTTP: a client pipelines 2,000 GETs of a 64 KiB file and never reads. The send timeout
  (1 s) ends it, and another client is served meanwhile.

usage: stalled_peer.py ECSHARDD"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import (CHECK_RSS, echo_ok, fail, free_port, live_bytes, only_listeners, rss, stop,
                    wait_port)


def writer(port, payload, result):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    t0 = time.monotonic()
    try:
        while sent < len(payload):
            sent += s.send(payload[sent:sent + 65536])
        result["outcome"] = "all sent"
    except OSError as e:
        result["outcome"] = "closed by the server (%s)" % e.__class__.__name__
    result["sent"] = sent
    result["seconds"] = time.monotonic() - t0
    s.close()


def main():
    ecshardd = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="ecshard-stalled-")
    with open(os.path.join(tmp, "big.bin"), "wb") as f:
        f.write(os.urandom(65536))
    echo, http, admin = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [ecshardd, "--shards", "2", *only_listeners(ecshardd, "echo", "http", "admin"),
         "--set", 'listener.admin.listen="127.0.0.1:%d"' % admin,
         "--set", 'listener.echo.listen="127.0.0.1:%d"' % echo,
         "--set", "listener.echo.idle_timeout=1.0",
         "--set", "listener.echo.sndbuf=16384",
         "--set", 'listener.http.listen="127.0.0.1:%d"' % http,
         "--set", "listener.http.sndbuf=16384",
         "--set", 'http.docroot="%s"' % tmp, "--set", "http.send_timeout=1.0",
         "--set", 'log.level="warning"'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(echo, proc=proc)
        wait_port(http, proc=proc)
        wait_port(admin, proc=proc)
        before, held_before = rss(proc.pid), live_bytes(admin)
        res = {}
        t = threading.Thread(target=writer, args=(echo, b"z" * (16 << 20), res))
        t.start()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", echo), timeout=5) as other:
            if not echo_ok(other, b"meanwhile\n", timeout=5):
                fail("echo: another client was not served while one peer stalled")
        grown, held = rss(proc.pid) - before, live_bytes(admin) - held_before
        t.join(30)
        if t.is_alive() or not res.get("outcome", "").startswith("closed"):
            fail("echo: the stalled connection was not closed: %r" % res)
        if held > 1 << 20:
            fail("echo: the server holds %d more bytes for a peer that does not read" % held)
        if CHECK_RSS and grown > 4 << 20:
            fail("echo: the server grew by %d bytes for a peer that does not read" % grown)
        print("ok: echo stalled peer: %r; server holds %d more bytes, RSS grew by %d%s" %
              (res, held, grown, "" if CHECK_RSS else " (not checked: sanitizer build)"))

        req = b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        stalled = socket.create_connection(("127.0.0.1", http), timeout=30)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(req)
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", http), timeout=5) as other:
            other.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                chunk = other.recv(4096)
                if not chunk:
                    break
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                fail("http: another client was not served while one peer stalled: %r" % got[:100])
        # The send timeout (1 s, checked twice a second) must have ended the stalled
        # connection: what is left to read is what sat in socket buffers, then EOF, not the
        # 128 MB the 2,000 answers would make.
        time.sleep(3)
        left = 0
        stalled.settimeout(5)
        try:
            while True:
                chunk = stalled.recv(1 << 20)
                if not chunk:
                    break
                left += len(chunk)
                if left > 32 << 20:
                    fail("http: the stalled connection is still being served after its send timeout")
        except socket.timeout:
            fail("http: the stalled connection was neither served nor closed")
        except ConnectionResetError:
            pass
        stalled.close()
        print("ok: http stalled peer closed by the send timeout (%d bytes were in flight)" % left)
    finally:
        rc = stop(proc)
    if rc != 0:
        fail("ecshardd exited with %d" % rc)
    print("ok")


if __name__ == "__main__":
    main()
