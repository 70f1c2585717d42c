#!/usr/bin/env python3
"""HTTP/1.1 conformance of ecshardd's http module over loopback: curl for the ordinary
paths, a raw socket client for pipelining, bodies, Expect: 100-continue, every malformed
or smuggling request the module must refuse, path traversal, limits and timeouts.

Usage: http_conformance.py PATH/TO/ecshardd"""
import hashlib
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fail  # noqa: E402
from http_common import Reader, Server, exchange, wait_until  # noqa: E402

CHECKS = 0


def check(cond, msg):
    global CHECKS
    CHECKS += 1
    if not cond:
        fail(msg)


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), capture_output=True)
    if r.returncode != 0:
        fail("curl %s: rc %d %s" % (" ".join(args), r.returncode, r.stderr.decode()))
    return r.stdout


def make_docroot():
    top = tempfile.mkdtemp(prefix="it_http_")
    root = os.path.join(top, "www")
    os.makedirs(os.path.join(root, "sub"))
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write("outside the root\n")
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<p>index</p>\n")
    with open(os.path.join(root, "hello.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(root, "sub", "index.html"), "w") as f:
        f.write("<p>sub</p>\n")
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "escape.txt"))
    os.symlink("hello.txt", os.path.join(root, "alias.txt"))
    os.symlink(top, os.path.join(root, "updir"))
    return top, root


def req(path="/hello", method="GET", extra="", version="HTTP/1.1", host="Host: t\r\n"):
    return ("%s %s %s\r\n%s%s\r\n" % (method, path, version, host, extra)).encode()


def expect_refused(server, data, status, what):
    """The request gets `status` with Connection: close, nothing else, then the close."""
    try:
        (r,), rd, s = exchange(server, data)
    except EOFError:
        fail("%s: connection closed without an answer" % what)
    check(r.status == status, "%s: status %d, wanted %d (%r)" % (what, r.status, status, r))
    check(r.closes(), "%s: no Connection: close (%r)" % (what, r))
    check(rd.eof(), "%s: connection not closed after the answer" % what)
    check(rd.buf == b"", "%s: more output after the error: %r" % (what, rd.buf[:80]))
    s.close()


def test_curl(srv, root):
    check(curl(srv.url("/hello")) == b"hello\n", "GET /hello")
    head = curl("-I", srv.url("/hello")).decode()
    check(head.startswith("HTTP/1.1 200") and "Content-Length: 6" in head, "HEAD /hello: " + head)
    check(curl(srv.url("/")) == b"<p>index</p>\n", "GET / serves index.html")
    check(curl(srv.url("/sub/")) == b"<p>sub</p>\n", "GET /sub/")
    out = curl("-D", "-", "-o", "/dev/null", srv.url("/sub")).decode()
    check(" 301 " in out.split("\r\n")[0] and "Location: /sub/" in out, "GET /sub redirects: " + out)
    check(curl(srv.url("/hello.txt?x=1")) == b"hello\n", "query string ignored for files")
    check(curl(srv.url("/alias.txt")) == b"hello\n", "symlink inside the root is served")
    out = curl("-D", "-", srv.url("/hello.txt")).decode()
    check("Content-Type: text/plain" in out, "content type: " + out)
    etag = [l.split(":", 1)[1].strip() for l in out.split("\r\n") if l.lower().startswith("etag:")][0]
    lm = [l.split(":", 1)[1].strip() for l in out.split("\r\n") if l.lower().startswith("last-modified:")][0]
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "If-None-Match: " + etag, srv.url("/hello.txt"))
    check(code == b"304", "If-None-Match -> 304, got %r" % code)
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", 'If-None-Match: "x", W/' + etag, srv.url("/hello.txt"))
    check(code == b"304", "If-None-Match list with a weak tag -> 304, got %r" % code)
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", 'If-None-Match: "other"', srv.url("/hello.txt"))
    check(code == b"200", "If-None-Match mismatch -> 200")
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "If-Modified-Since: " + lm, srv.url("/hello.txt"))
    check(code == b"304", "If-Modified-Since -> 304, got %r" % code)
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT",
                srv.url("/hello.txt"))
    check(code == b"200", "older If-Modified-Since -> 200")
    out = curl("-D", "-", "-r", "1-3", srv.url("/hello.txt")).decode()
    check(" 206 " in out and "Content-Range: bytes 1-3/6" in out and out.endswith("\r\n\r\nell"), "Range 1-3: " + out)
    check(curl("-r", "-2", srv.url("/hello.txt")) == b"o\n", "suffix range")
    check(curl("-r", "4-", srv.url("/hello.txt")) == b"o\n", "open range")
    out = curl("-D", "-", "-r", "10-20", srv.url("/hello.txt")).decode()
    check(" 416 " in out and "Content-Range: bytes */6" in out, "unsatisfiable range: " + out)
    check(curl("-r", "0-1,3-4", srv.url("/hello.txt")) == b"hello\n", "several ranges: the whole file")
    check(curl("-H", "If-Range: \"stale\"", "-r", "1-3", srv.url("/hello.txt")) == b"hello\n",
          "If-Range mismatch: the whole file")
    check(curl("-H", "If-Range: " + etag, "-r", "1-3", srv.url("/hello.txt")) == b"ell", "If-Range match")
    big = open(os.path.join(root, "big.bin"), "rb").read()
    got = curl(srv.url("/big.bin"))
    check(hashlib.sha256(got).digest() == hashlib.sha256(big).digest(), "3 MiB file by sendfile")
    got = curl("-r", "1000000-2999999", srv.url("/big.bin"))
    check(got == big[1000000:3000000], "range of the big file")
    # curl sends Expect: 100-continue for bodies over 1 KiB
    out = curl("-D", "-", "--data-binary", "@" + os.path.join(root, "index.html"), "-H", "Expect: 100-continue",
               srv.url("/hello")).decode()
    check("HTTP/1.1 100 Continue" in out and out.endswith("hello\n"), "POST with Expect: " + out)
    out = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "x" * 900, srv.url("/hello"))
    check(out == b"hello\n", "chunked POST by curl")
    code = curl("-o", "/dev/null", "-w", "%{http_code}", srv.url("/missing"))
    check(code == b"404", "404")
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", srv.url("/hello.txt"))
    check(code == b"405", "DELETE of a file: 405")
    # keep-alive: curl reuses one connection for several URLs
    r = subprocess.run(["curl", "-sS", "-v", srv.url("/hello"), srv.url("/hello.txt"), srv.url("/hello")],
                       capture_output=True, text=True)
    check(r.stdout == "hello\nhello\nhello\n" and "Re-using existing connection" in r.stderr, "curl keep-alive")
    out = curl("-0", "-D", "-", srv.url("/hello")).decode()
    check(out.startswith("HTTP/1.1 200") and "Connection: close" in out, "HTTP/1.0 without keep-alive")


def test_traversal(srv):
    for path, status in [("/../secret.txt", 400), ("/%2e%2e/secret.txt", 400), ("/sub/../../secret.txt", 400),
                         ("/a/%2E%2E/%2e%2E/secret.txt", 400), ("/hello.txt%00.html", 400), ("/%zz", 400),
                         ("/escape.txt", 404), ("/updir/secret.txt", 404), ("/updir/www/hello.txt", 404)]:
        (r,), rd, s = exchange(srv, req(path))
        check(r.status == status, "%s: %d, wanted %d" % (path, r.status, status))
        check(b"outside" not in r.body, "%s leaked the file outside the root" % path)
        s.close()
    (r,), rd, s = exchange(srv, req("/sub/./../hello.txt"))
    check(r.status == 200 and r.body == b"hello\n", "dot segments inside the root are resolved")
    s.close()


def test_pipelining(srv):
    data = req("/hello") + req("/hello.txt") + req("/hello", "HEAD") + req("/missing") + req("/hello")
    s = srv.connect()
    s.sendall(data)
    rd = Reader(s)
    got = [rd.response(), rd.response(), rd.response(head_only=True), rd.response(), rd.response()]
    check([r.status for r in got] == [200, 200, 200, 404, 200], "pipelined statuses %r" % got)
    check(got[0].body == b"hello\n" and got[1].body == b"hello\n" and got[2].body == b"", "pipelined bodies")
    check(not rd.eof(0.3), "connection stays open after pipelined requests")
    s.close()
    # a deep pipeline in one segment, and one trickled byte by byte
    s = srv.connect()
    s.sendall(req("/hello") * 200)
    rd = Reader(s)
    check(all(rd.response().body == b"hello\n" for _ in range(200)), "200 pipelined requests")
    data = req("/hello") * 3
    for i in range(len(data)):
        s.send(data[i:i + 1])
    check(all(rd.response().status == 200 for _ in range(3)), "requests trickled byte by byte")
    s.close()
    # pipelined behind a big file: answers stay in order
    s = srv.connect()
    s.sendall(req("/big.bin") + req("/hello") + req("/hello.txt"))
    rd = Reader(s)
    a, b, c = rd.response(), rd.response(), rd.response()
    check(len(a.body) == 3 * 1024 * 1024 + 17 and b.body == b"hello\n" and c.body == b"hello\n",
          "pipelined behind a file")
    s.close()


def test_bodies(srv):
    body = b"a=1&b=2"
    data = req("/hello", "POST", "Content-Length: %d\r\n" % len(body)) + body + req("/hello")
    rs, rd, s = exchange(srv, data, 2)
    check([r.status for r in rs] == [200, 200], "POST with Content-Length then GET: %r" % rs)
    s.close()
    chunked = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    data = req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + chunked + req("/hello")
    rs, rd, s = exchange(srv, data, 2)
    check([r.status for r in rs] == [200, 200], "chunked POST with a trailer then GET: %r" % rs)
    s.close()
    # Expect: 100-continue over a raw socket
    s = srv.connect()
    s.sendall(req("/hello", "POST", "Content-Length: 4\r\nExpect: 100-continue\r\n"))
    rd = Reader(s)
    r = rd.response()
    check(r.status == 100, "100 Continue first: %r" % r)
    s.sendall(b"abcd")
    r = rd.response()
    check(r.status == 200 and r.body == b"hello\n", "then the answer: %r" % r)
    s.sendall(req("/hello"))
    check(rd.response().status == 200, "keep-alive after the body")
    s.close()
    # body already there: no 100
    rs, rd, s = exchange(srv, req("/hello", "POST", "Content-Length: 4\r\nExpect: 100-continue\r\n") + b"abcd")
    check(rs[0].status == 200, "no 100 when the body came with the head: %r" % rs)
    s.close()
    # a body that arrives in pieces
    s = srv.connect()
    s.sendall(req("/hello", "POST", "Transfer-Encoding: chunked\r\n"))
    rd = Reader(s)
    for piece in [b"1", b"0\r\n", b"x" * 16, b"\r", b"\n0", b"\r\n\r\n"]:
        time.sleep(0.02)
        s.sendall(piece)
    check(rd.response().status == 200, "chunked body in pieces")
    s.close()


def test_refused(srv):
    cases = [
        ("Content-Length twice", req("/hello", "POST", "Content-Length: 3\r\nContent-Length: 3\r\n") + b"abc", 400),
        ("Content-Length conflicting", req("/hello", "POST", "Content-Length: 3\r\nContent-Length: 4\r\n") + b"abcd", 400),
        ("Content-Length list", req("/hello", "POST", "Content-Length: 3, 3\r\n") + b"abc", 400),
        ("Content-Length sign", req("/hello", "POST", "Content-Length: +3\r\n") + b"abc", 400),
        ("Content-Length negative", req("/hello", "POST", "Content-Length: -1\r\n"), 400),
        ("Content-Length hex", req("/hello", "POST", "Content-Length: 0x3\r\n"), 400),
        ("Content-Length and Transfer-Encoding",
         req("/hello", "POST", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n", 400),
        ("Transfer-Encoding and Content-Length",
         req("/hello", "POST", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n") + b"0\r\n\r\n", 400),
        ("Transfer-Encoding gzip", req("/hello", "POST", "Transfer-Encoding: gzip\r\n"), 400),
        ("Transfer-Encoding chunked, gzip", req("/hello", "POST", "Transfer-Encoding: chunked, gzip\r\n"), 400),
        ("Transfer-Encoding chunked twice", req("/hello", "POST", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400),
        ("Transfer-Encoding chunked,chunked", req("/hello", "POST", "Transfer-Encoding: chunked, chunked\r\n"), 400),
        ("Transfer-Encoding xchunked", req("/hello", "POST", "Transfer-Encoding: xchunked\r\n"), 400),
        ("Transfer-Encoding chunked;x", req("/hello", "POST", "Transfer-Encoding: chunked;x=1\r\n"), 400),
        ("Transfer-Encoding empty element", req("/hello", "POST", "Transfer-Encoding: chunked,\r\n"), 400),
        ("Transfer-Encoding with a tab", req("/hello", "POST", "Transfer-Encoding:\tchunked\r\n"), 400),
        ("Transfer-Encoding empty", req("/hello", "POST", "Transfer-Encoding: \r\n"), 400),
        ("Transfer-Encoding in HTTP/1.0", req("/hello", "POST", "Transfer-Encoding: chunked\r\n", "HTTP/1.0") + b"0\r\n\r\n", 400),
        ("Transfer-Encoding gzip, chunked", req("/hello", "POST", "Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n", 501),
        ("obs-fold", req("/hello", extra="X-A: 1\r\n continued\r\n"), 400),
        ("obs-fold with tab", req("/hello", extra="X-A: 1\r\n\tcontinued\r\n"), 400),
        ("obs-fold of Transfer-Encoding", req("/hello", "POST", "Transfer-Encoding:\r\n chunked\r\n"), 400),
        ("bare CR in a value", req("/hello", extra="X-A: a\rb\r\n"), 400),
        ("bare CR ending a line", b"GET /hello HTTP/1.1\rHost: t\r\n\r\n", 400),
        ("bare CR in the target", b"GET /he\rllo HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("space before the colon", req("/hello", extra="Content-Length : 0\r\n"), 400),
        ("tab before the colon", req("/hello", extra="X-A\t: 0\r\n"), 400),
        ("bad token in a name", req("/hello", extra="X@A: 0\r\n"), 400),
        ("empty name", req("/hello", extra=": 0\r\n"), 400),
        ("bad token in the method", b"G(T /hello HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("NUL in a value", req("/hello", extra="X-A: a\x00b\r\n"), 400),
        ("control character in a value", req("/hello", extra="X-A: a\x01b\r\n"), 400),
        ("two spaces in the request line", b"GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("no version", b"GET /hello\r\nHost: t\r\n\r\n", 400),
        ("lower-case version", b"GET /hello http/1.1\r\nHost: t\r\n\r\n", 400),
        ("HTTP/2.0", b"GET /hello HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("HTTP/0.9 style", b"GET /hello\r\n\r\n", 400),
        ("missing Host", req("/hello", host=""), 400),
        ("two Hosts", req("/hello", extra="Host: u\r\n"), 400),
        ("bad Host", req("/hello", host="Host: a b\r\n"), 400),
        ("target not a path", req("hello"), 400),
        ("Expect other", req("/hello", "POST", "Content-Length: 1\r\nExpect: 200-ok\r\n") + b"x", 417),
        ("request line too long", req("/" + "a" * 9000), 414),
        ("too many headers", req("/hello", extra="".join("X-%d: %d\r\n" % (i, i) for i in range(25))), 431),
        ("header section too large", req("/hello", extra="X-Big: %s\r\n" % ("b" * 5000)), 431),
        ("Content-Length over max_body", req("/hello", "POST", "Content-Length: 2000\r\n"), 413),
        ("Content-Length overflow", req("/hello", "POST", "Content-Length: 99999999999999999999999\r\n"), 413),
        ("chunked over max_body", req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + b"7d0\r\n" + b"x" * 2000, 413),
        ("chunk size not hex", req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + b"zz\r\n", 400),
        ("chunk size overflow", req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + b"1" * 20 + b"\r\n", 400),
        ("chunk without CRLF", req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + b"3\r\nabcX0\r\n\r\n", 400),
        ("chunk line bare CR", req("/hello", "POST", "Transfer-Encoding: chunked\r\n") + b"3\rabc\r\n0\r\n\r\n", 400),
        ("body on a file", req("/hello.txt", "GET", "Content-Length: 3\r\n") + b"abc", 413),
    ]
    for what, data, status in cases:
        expect_refused(srv, data, status, what)
    # a refused request pipelined in front of a valid one: only the error, then the close
    expect_refused(srv, req("/hello", extra="Content-Length: 1\r\nContent-Length: 1\r\n") + b"x" + req("/hello"),
                   400, "smuggled second request")
    # the classic CL.TE / TE.CL smuggling payloads
    expect_refused(srv, b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"0\r\n\r\nSMUGGLED", 400, "CL.TE")
    expect_refused(srv, b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"8\r\nSMUGGLED\r\n0\r\n\r\n", 400, "TE.CL")
    expect_refused(srv, b"POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n"
                   b"5c\r\n", 400, "TE with a space before the colon")
    # HEAD and 405 keep the connection
    rs, rd, s = exchange(srv, req("/hello", "PATCH") + req("/hello"), 2)
    check(rs[0].status == 405 and not rs[0].closes() and rs[1].status == 200, "405 keeps the connection: %r" % rs)
    s.close()


def test_limits_and_timeouts(srv):
    # max_requests = 300: the 300th answer closes
    s = srv.connect()
    s.sendall(req("/hello") * 301)
    rd = Reader(s)
    rs = [rd.response() for _ in range(300)]
    check(not any(r.closes() for r in rs[:299]) and rs[299].closes(), "max_requests: %r" % rs[-2:])
    check(rd.eof() and rd.buf == b"", "closed after max_requests")
    s.close()
    # slowloris: a head trickled forever gets 408 once header_timeout (1 s) has passed
    s = srv.connect(timeout=10)
    rd = Reader(s)
    t0 = time.monotonic()
    s.sendall(b"GET /hello HTTP/1.1\r\n")
    got = None
    for i in range(40):
        try:
            s.sendall(b"X-%d: y\r\n" % i)
        except OSError:
            break
        time.sleep(0.2)
        s.setblocking(False)
        try:
            chunk = s.recv(4096)
            rd.buf += chunk
            if b"\r\n\r\n" in rd.buf:
                got = rd
                break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        finally:
            s.setblocking(True)
    s.settimeout(10)
    check(got is not None, "no 408 for a trickled head after %.1f s" % (time.monotonic() - t0))
    r = rd.response()
    check(r.status == 408 and r.closes(), "slow head: %r" % r)
    s.close()
    # a body that stops: 408 after body_timeout
    s = srv.connect(timeout=10)
    s.sendall(req("/hello", "POST", "Content-Length: 10\r\n") + b"abc")
    rd = Reader(s)
    r = rd.response()
    check(r.status == 408 and r.closes(), "stalled body: %r" % r)
    s.close()
    # an idle keep-alive connection is closed after keepalive_timeout; it holds no answer
    s = srv.connect(timeout=10)
    s.sendall(req("/hello"))
    rd = Reader(s)
    check(rd.response().status == 200, "request before idling")
    check(rd.eof(8.0) and rd.buf == b"", "idle keep-alive connection closed silently")
    s.close()
    # a connection that never sends anything is closed too
    s = srv.connect(timeout=10)
    check(Reader(s).eof(8.0), "silent connection closed")
    s.close()


def test_tls(binary, top, root):
    """Implicit TLS on the listener: files go through the TLS opset (no sendfile)."""
    if shutil.which("openssl") is None:
        print("note: openssl not installed; TLS not tested")
        return
    cert, key = os.path.join(top, "c.pem"), os.path.join(top, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    srv = Server(binary, ['listener.http.tls.certificate="%s"' % cert, 'listener.http.tls.key="%s"' % key],
                 shards=2, docroot=root)
    try:
        url = "https://127.0.0.1:%d" % srv.port
        check(curl("-k", url + "/hello") == b"hello\n", "TLS GET /hello")
        check(curl("-k", "-r", "1-3", url + "/hello.txt") == b"ell", "TLS range")
        big = open(os.path.join(root, "big.bin"), "rb").read()
        check(hashlib.sha256(curl("-k", url + "/big.bin")).digest() == hashlib.sha256(big).digest(),
              "TLS: 3 MiB file through the TLS opset")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(srv.connect(), server_hostname="localhost")
        s.sendall(req("/hello") + req("/big.bin") + req("/hello.txt"))
        rd = Reader(s)
        a, b, c = rd.response(), rd.response(), rd.response()
        check(a.body == b"hello\n" and b.body == big and c.body == b"hello\n", "TLS pipelining behind a file")
        s.sendall(req("/hello", extra="Content-Length: 1\r\nContent-Length: 1\r\n") + b"x")
        r = rd.response()
        check(r.status == 400 and r.closes() and rd.eof(), "TLS: refused request closes")
        s.close()
    finally:
        srv.stop()
    print("ok test_tls", flush=True)


def main():
    if len(sys.argv) != 2:
        fail("usage: http_conformance.py ECSHARDD")
    if shutil.which("curl") is None:
        print("SKIP: curl not installed")
        sys.exit(77)
    top, root = make_docroot()
    sets = ["http.max_headers=20", "http.max_header_bytes=4096", "http.max_body=1000",
            "http.max_requests=300", "http.header_timeout=1.0", "http.body_timeout=1.0",
            "http.keepalive_timeout=1.5", "http.access_log=true"]
    srv = Server(sys.argv[1], sets, shards=2, docroot=root)
    try:
        test_curl(srv, root)
        for t in (test_traversal, test_pipelining, test_bodies, test_refused, test_limits_and_timeouts):
            t(srv)
            print("ok %s" % t.__name__, flush=True)
        check(curl(srv.url("/hello")) == b"hello\n", "still serving at the end")
    finally:
        log = srv.stop()
    try:
        test_tls(sys.argv[1], top, root)
    finally:
        shutil.rmtree(top)
    check("access 127.0.0.1 \"GET /hello HTTP/1.1\" 200 6" in log, "access log lines reach the log")
    print("PASS: %d checks" % CHECKS)


if __name__ == "__main__":
    main()
