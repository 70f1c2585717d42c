"""Helpers for the HTTP integration tests: start ecshardd with only the http listener on
a free port, and a small raw-socket HTTP/1.1 client that reads responses exactly (status,
headers, Content-Length body), for pipelining and malformed input that curl cannot send."""
import os
import socket
import subprocess
import tempfile
import time

from common import fail, free_port, stop, wait_port


class Server:
    def __init__(self, binary, sets=(), shards=2, docroot=None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="it_http_", suffix=".log", delete=False)
        args = [binary, "--shards", str(shards),
                "--set", 'listener.http.listen="127.0.0.1:%d"' % self.port]
        # Every other listener of the embedded default (echo, urlfetch, admin, console, ...)
        # is switched off: fixed ports and socket paths would collide between tests.
        cfg = subprocess.run([binary, "--print-config"], capture_output=True, text=True).stdout
        section = cfg.split("\nlistener = {\n", 1)[1].split("\n};", 1)[0] if "\nlistener = {\n" in cfg else ""
        for line in section.splitlines():
            if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith("= {"):
                name = line.strip().split(" ", 1)[0]
                if name != "http":
                    args += ["--set", "listener.%s.enabled=false" % name]
        if docroot is not None:
            args += ["--set", 'http.docroot="%s"' % docroot]
        for s in sets:
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, 20, self.proc)

    def stop(self):
        rc = stop(self.proc)
        self.log.flush()
        text = open(self.log.name, errors="replace").read()
        if rc != 0:
            print(text)
            fail("ecshardd exited with %s" % rc)
        if "ERROR: AddressSanitizer" in text or "ERROR: LeakSanitizer" in text or \
                "runtime error:" in text or "WARNING: ThreadSanitizer" in text:
            print(text)
            fail("sanitizer report in the server's output")
        os.unlink(self.log.name)
        return text

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def connect(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.settimeout(timeout)
        return s


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def closes(self):
        return (self.header("connection") or "").lower() == "close"

    def __repr__(self):
        return "<%d %s %r %r>" % (self.status, self.reason, self.headers, self.body[:60])


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        proto, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        if proto != "HTTP/1.1":
            raise ValueError("bad status line %r" % lines[0])
        headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
        r = Response(int(status), reason, headers, b"")
        n = 0 if head_only or r.status in (100, 204, 304) else int(r.header("content-length") or 0)
        while len(self.buf) < n:
            self._fill()
        r.body, self.buf = self.buf[:n], self.buf[n:]
        return r

    def eof(self, timeout=5.0):
        """True if the server closes the connection (after what was already read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def exchange(server, data, count=1, head_only=False):
    """Sends `data` on a new connection and reads `count` responses."""
    s = server.connect()
    try:
        s.sendall(data)
        rd = Reader(s)
        return [rd.response(head_only) for _ in range(count)], rd, s
    except Exception:
        s.close()
        raise


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()
