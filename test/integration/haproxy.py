"""A real HAProxy (Debian's package) in front of ecshardd, sending PROXY v2 headers: the
echo listener with proxy_protocol = true strips the header (an echo that included it,
or a refusal, would show), and a client that skips HAProxy and sends no header is
refused. Exits 77 (skipped) when haproxy is not installed.

usage: haproxy.py ECSHARDD"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from common import only_listeners, echo_ok, fail, free_port, stop, wait_port


def main():
    ecshardd = sys.argv[1]
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        print("haproxy is not installed: skipped")
        sys.exit(77)
    front, back = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write("""global
  maxconn 256
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 127.0.0.1:%d send-proxy-v2
""" % (front, back))
    cfg.close()
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(
        [ecshardd, "--shards", "2",
         "--set", 'listener.echo.listen="127.0.0.1:%d"' % back,
         *only_listeners(ecshardd, "echo"),
         "--set", "listener.echo.proxy_protocol=true",
         "--set", 'log.level="notice"'],
        stderr=log)
    proxy = None
    try:
        wait_port(back, proc=server)
        proxy = subprocess.Popen([haproxy, "-db", "-f", cfg.name],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(front, proc=proxy)
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", front), timeout=2)
            msg = ("through haproxy %d\n" % i).encode()
            if not echo_ok(s, msg, timeout=3):
                fail("connection %d through HAProxy was not echoed exactly" % i)
            s.close()
        direct = socket.create_connection(("127.0.0.1", back), timeout=2)
        if echo_ok(direct, b"no header here\n", timeout=2):
            fail("a connection without a PROXY header was served")
        direct.close()
    finally:
        if proxy is not None:
            stop(proxy)
        rc = stop(server)
        os.unlink(cfg.name)
    log.seek(0)
    err = log.read()
    if rc != 0:
        fail("ecshardd exited with %d:\n%s" % (rc, err))
    print("ok: 20 connections through HAProxy with PROXY v2, header-less one refused")


if __name__ == "__main__":
    main()
