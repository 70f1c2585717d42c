"""TLS listeners of ecshardd (the echo module) against real peers: `openssl s_client` and
Python's ssl module. Certificates (a CA, two server names, a client) are generated at run
time with the openssl command into a temporary directory.

Checked: TLS 1.2 and 1.3 echo; session resumption with -sess_out/-sess_in on a 2-shard
server (several connections, so both shards serve resumed ones); ALPN (server preference,
no overlap); SNI picking the right certificate; client certificates (required: refused
without, served with); a client that connects and never handshakes is closed after the
listener's handshake_timeout; renegotiation is refused; garbage and a truncated record do not hurt the shard; tiny
socket buffers (rcvbuf/sndbuf) with a 128 KiB echo; a bad configuration names file:line.
Exits 77 (skipped) without the openssl command.

usage: tls.py ECSHARDD"""
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from common import fail, free_port, stop, wait_port

D = tempfile.mkdtemp(prefix="ecshard-tls-it-")


def run(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30, **kw)


def make_certs():
    p = lambda n: os.path.join(D, n)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
        "-subj", "/CN=ecshard test CA")
    for name, subj, san in (("a", "/CN=a.test", "DNS:a.test,DNS:localhost"),
                            ("b", "/CN=b.test", "DNS:b.test,DNS:*.b.test"),
                            ("client", "/CN=alice/O=Example", None)):
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", subj)
        ext = p(name + ".ext")
        with open(ext, "w") as f:
            if san:
                f.write("subjectAltName=%s\n" % san)
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        run("openssl", "x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.pem"),
            "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p(name + ".pem"), "-days", "2",
            "-extfile", ext)
    with open(p("ticket.key"), "wb") as f:
        f.write(os.urandom(80))


def start(config, shards=2, expect_fail=False):
    cfg = os.path.join(D, "ecshardd.conf")
    with open(cfg, "w") as f:
        f.write(config)
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([ecshardd, "--shards", str(shards), "--config", cfg,
                             "--set", 'log.level="info"'], stderr=log)
    if expect_fail:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            stop(proc)
            fail("ecshardd started with a bad tls section")
        log.seek(0)
        return proc.returncode, log.read()
    return proc, log


def finish(proc, log, what):
    rc = stop(proc)
    log.seek(0)
    text = log.read()
    if rc != 0:
        fail("%s: ecshardd exited with %d:\n%s" % (what, rc, text))
    return text


def listener(port, tls, extra=""):
    return """listener = { t = { listen = "127.0.0.1:%d"; protocol = "echo"; %s
  tls = { %s }; }; };
""" % (port, extra, tls)


def s_client(port, *args, data=b"hello\n", timeout=10, verify=True):
    """Runs s_client, sends `data` and waits (bounded) for its echo before closing stdin;
    returns (stdout+stderr text, exit code)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile",
           os.path.join(D, "ca.pem"), "-no_ign_eof"] + list(args)
    if verify:
        cmd.append("-verify_return_error")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = b""
    deadline = time.monotonic() + timeout
    proc.stdin.write(data)
    proc.stdin.flush()
    want = data.strip()
    # The echo shows after the handshake summary ("---" line); stop at it or at exit.
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            tail = out.split(b"---\n")[-1]
            if want and want in tail:
                break
    try:
        proc.stdin.close()
    except OSError:
        pass
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    try:
        proc.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    return out.decode(errors="replace"), proc.returncode


def ctx_client(alpn=None, cert=None, version=None):
    c = ssl.create_default_context(cafile=os.path.join(D, "ca.pem"))
    if alpn:
        c.set_alpn_protocols(alpn)
    if cert:
        c.load_cert_chain(os.path.join(D, cert + ".pem"), os.path.join(D, cert + ".key"))
    if version:
        c.minimum_version = c.maximum_version = version
    return c


def tls_echo(port, host="a.test", payload=b"ping\n", **kw):
    c = ctx_client(**kw)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with c.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got, s


def bulk_echo(port, size, buf=0, limit=30.0):
    """Echoes `size` random bytes through TLS with one non-blocking socket and a memory-BIO
    SSLObject (no threads: nothing is ever blocked on both directions). Returns (bytes
    echoed, None) or (bytes echoed, what went wrong)."""
    payload = os.urandom(size)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if buf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buf)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buf)
    raw.setblocking(False)
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx_client().wrap_bio(inc, outg, server_hostname="a.test")
    sent, got, out_pending = 0, bytearray(), b""
    hs = False
    deadline = time.monotonic() + limit
    try:
        while len(got) < size:
            if time.monotonic() > deadline:
                return len(got), "no progress for %.0f s (sent %d)" % (limit, sent)
            if not hs:
                try:
                    obj.do_handshake()
                    hs = True
                except ssl.SSLWantReadError:
                    pass
            if hs and sent < size and len(out_pending) < 65536:
                try:
                    sent += obj.write(payload[sent:sent + 16384])
                except ssl.SSLWantReadError:
                    pass
            out_pending += outg.read()
            while hs:
                try:
                    chunk = obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    return len(got), "end of stream"
                got += chunk
            r, w, _ = select.select([raw], [raw] if out_pending else [], [], 0.5)
            if w:
                try:
                    k = raw.send(out_pending)
                    out_pending = out_pending[k:]
                except BlockingIOError:
                    pass
            if r:
                try:
                    data = raw.recv(65536)
                except BlockingIOError:
                    data = None
                if data == b"":
                    return len(got), "connection closed"
                if data:
                    inc.write(data)
    finally:
        raw.close()
    return len(got), None if bytes(got) == payload else "different bytes"


def a_cert():
    return 'certificate = "%s/a.pem"; key = "%s/a.key";' % (D, D)


def t_versions_resumption_alpn_sni():
    port = free_port()
    tls = a_cert() + """ alpn = [ "h2", "http/1.1" ];
      sni = { b = { certificate = "%s/b.pem"; key = "%s/b.key"; }; };""" % (D, D)
    proc, log = start('debug_flags = { DEBUG = [ "SSL" ]; };\n' + listener(port, tls))
    try:
        wait_port(port, proc=proc)
        for v in ("-tls1_2", "-tls1_3"):
            out, rc = s_client(port, v, "-servername", "a.test")
            want = "TLSv1.2" if v == "-tls1_2" else "TLSv1.3"
            if rc != 0 or "hello" not in out or ("Protocol  : " + want) not in out and \
                    ("New, TLSv1.3" if want == "TLSv1.3" else "Protocol  : TLSv1.2") not in out:
                fail("s_client %s: no %s echo (rc %d):\n%s" % (v, want, rc, out))
        # Resumption: one full handshake, then resumed ones; 2 shards and SO_REUSEPORT
        # spread the connections, so several resumed ones land on each shard.
        for v in ("-tls1_2", "-tls1_3"):
            sess = os.path.join(D, "sess" + v)
            out, rc = s_client(port, v, "-servername", "a.test", "-sess_out", sess)
            if rc != 0 or "hello" not in out:
                fail("s_client %s -sess_out failed:\n%s" % (v, out))
            reused = 0
            for i in range(12):
                out, rc = s_client(port, v, "-servername", "a.test", "-sess_in", sess)
                if rc == 0 and "Reused, " in out and "hello" in out:
                    reused += 1
            if reused != 12:
                fail("%s: only %d of 12 connections resumed the session:\n%s" % (v, reused, out))
        # Both shards served resumed sessions (the SSL debug line names the shard).
        log.flush()
        time.sleep(0.3)
        log.seek(0)
        text = log.read()
        per_shard = [sum(1 for l in text.splitlines()
                         if "[shard %d] debug: TLS handshake done" % sh in l
                         and l.endswith(", resumed")) for sh in (0, 1)]
        if min(per_shard) == 0:
            fail("resumed sessions per shard %s: one shard served none:\n%s"
                 % (per_shard, text[-3000:]))
        # ALPN: the server's preference wins; no common protocol means no ALPN.
        out, rc = s_client(port, "-servername", "a.test", "-alpn", "http/1.1,h2")
        if rc != 0 or "ALPN protocol: h2" not in out:
            fail("ALPN: h2 was not selected:\n%s" % out)
        out, rc = s_client(port, "-servername", "a.test", "-alpn", "imap")
        if rc != 0 or "No ALPN negotiated" not in out or "hello" not in out:
            fail("ALPN without overlap should go on without ALPN:\n%s" % out)
        # SNI: each name gets its own certificate, verified against the name.
        for host, cn in (("a.test", "CN = a.test"), ("b.test", "CN = b.test"),
                         ("x.b.test", "CN = b.test"), ("other.test", "CN = a.test")):
            out, rc = s_client(port, "-servername", host, "-showcerts")
            if ("subject=" + cn) not in out and ("subject=/" + cn.replace(" = ", "=")) not in out:
                fail("SNI %s did not get the certificate %s:\n%s" % (host, cn, out))
            if host != "other.test":
                out, rc = s_client(port, "-servername", host, "-verify_hostname", host)
                if rc != 0 or "hello" not in out:
                    fail("SNI %s: hostname verification failed:\n%s" % (host, out))
        got, _ = tls_echo(port, "b.test", alpn=["http/1.1"])
        if got != b"ping\n":
            fail("python ssl client through SNI b.test: %r" % got)
    finally:
        text = finish(proc, log, "versions/resumption/alpn/sni")
    print("ok: TLS 1.2/1.3, 2x12 resumed sessions (%d on shard 0, %d on shard 1), ALPN, SNI"
          % tuple(per_shard))
    return text


def t_ticket_key_file_across_restart():
    port = free_port()
    tls = a_cert() + ' ticket_key_files = [ "%s/ticket.key" ];' % D
    sess = os.path.join(D, "sess-file")
    for round_ in range(2):
        proc, log = start(listener(port, tls))
        try:
            wait_port(port, proc=proc)
            if round_ == 0:
                out, rc = s_client(port, "-tls1_3", "-servername", "a.test", "-sess_out", sess)
                if rc != 0:
                    fail("ticket key file: first connection failed:\n%s" % out)
            else:
                out, rc = s_client(port, "-tls1_3", "-servername", "a.test", "-sess_in", sess)
                if rc != 0 or "Reused, " not in out:
                    fail("a ticket from before the restart did not resume:\n%s" % out)
        finally:
            finish(proc, log, "ticket key file")
    print("ok: ticket_key_files: a session resumed across a restart")


def t_no_resume_around_client_auth():
    """Two listeners share a ticket key file; one asks for client certificates. A session
    from the open one must not resume on the other (that would skip client_auth)."""
    p1, p2 = free_port(), free_port()
    key = ' ticket_key_files = [ "%s/ticket.key" ];' % D
    conf = """listener = {
  open = { listen = "127.0.0.1:%d"; protocol = "echo"; tls = { %s }; };
  strict = { listen = "127.0.0.1:%d"; protocol = "echo";
             tls = { %s client_auth = "required"; client_ca = "%s/ca.pem"; }; };
};
""" % (p1, a_cert() + key, p2, a_cert() + key, D)
    proc, log = start(conf)
    sess = os.path.join(D, "sess-open")
    try:
        wait_port(p1, proc=proc)
        wait_port(p2, proc=proc)
        for v in ("-tls1_2", "-tls1_3"):
            out, rc = s_client(p1, v, "-servername", "a.test", "-sess_out", sess)
            if rc != 0 or "hello" not in out:
                fail("open listener %s: no echo:\n%s" % (v, out))
            out, rc = s_client(p2, v, "-servername", "a.test", "-sess_in", sess)
            if "Reused, " in out or "hello" in out.split("---\n")[-1]:
                fail("%s: a session of the open listener resumed on the client_auth one:\n%s"
                     % (v, out))
    finally:
        finish(proc, log, "no resume around client_auth")
    print("ok: a shared ticket key does not let a session skip client_auth")


def t_client_certs():
    port = free_port()
    tls = a_cert() + ' client_auth = "required"; client_ca = "%s/ca.pem";' % D
    proc, log = start(listener(port, tls))
    try:
        wait_port(port, proc=proc)
        got, _ = tls_echo(port, cert="client")
        if got != b"ping\n":
            fail("client certificate: no echo (%r)" % got)
        try:
            got, _ = tls_echo(port)
            if got == b"ping\n":
                fail("client_auth = required served a client without a certificate")
        except (ssl.SSLError, OSError):
            pass
        # The shard is fine after the refusal.
        got, _ = tls_echo(port, cert="client")
        if got != b"ping\n":
            fail("client certificate after a refusal: no echo")
    finally:
        finish(proc, log, "client certs")
    print("ok: client_auth = required: with a certificate served, without refused")


def t_handshake_timeout_garbage_tiny_buffers():
    port = free_port()
    proc, log = start(listener(port, a_cert(), "handshake_timeout = 0.5; rcvbuf = 4096; "
                                               "sndbuf = 4096;"))
    try:
        wait_port(port, proc=proc)
        # Never handshakes: closed by the server after about handshake_timeout.
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        t0 = time.monotonic()
        try:
            data = idle.recv(100)
        except socket.timeout:
            fail("a client that never handshakes was not closed within 10 s")
        except ConnectionResetError:
            data = b""
        if data != b"":
            fail("the silent client got %r" % data)
        if time.monotonic() - t0 > 9:
            fail("closed, but only after %.1f s" % (time.monotonic() - t0))
        idle.close()
        # A client that sent half a ClientHello and stalls: closed too.
        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        try:
            if half.recv(100) != b"":
                fail("a truncated ClientHello got an answer")
        except ConnectionResetError:
            pass
        except socket.timeout:
            fail("a truncated ClientHello was not closed within 10 s")
        half.close()
        # Garbage instead of a handshake, and a truncated record after the handshake.
        for junk in (b"GET / HTTP/1.0\r\n\r\n", os.urandom(3000)):
            g = socket.create_connection(("127.0.0.1", port), timeout=5)
            g.sendall(junk)
            try:
                g.recv(100)
            except OSError:
                pass
            g.close()
        c = ctx_client()
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = c.wrap_socket(raw, server_hostname="a.test")
        s.sendall(b"x\n")
        s.recv(10)
        os.write(s.fileno(), b"\x17\x03\x03\x40\x00" + b"\x00" * 10)  # a record cut short
        time.sleep(0.1)
        s.close()
        # Tiny buffers: 128 KiB echoed through the listener's 4 KiB socket buffers, so every
        # TLS record leaves in pieces (partial writes, E_WRITE waits). Loopback TCP with
        # such small windows crawls (window probes), hence the modest size.
        n, why = bulk_echo(port, 128 << 10, limit=60)
        if why:
            fail("128 KiB through tiny buffers: %s after %d bytes" % (why, n))
        got, _ = tls_echo(port)
        if got != b"ping\n":
            fail("the server stopped serving after garbage and stalled clients")
    finally:
        text = finish(proc, log, "timeout/garbage")
    print("ok: silent and stalled clients closed after handshake_timeout, garbage and a "
          "truncated record survived, 128 KiB through 4 KiB buffers")


def t_no_renegotiation():
    """s_client's R command asks for a TLS 1.2 renegotiation: refused with an alert."""
    port = free_port()
    proc, log = start(listener(port, a_cert()))
    try:
        wait_port(port, proc=proc)
        cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2",
               "-CAfile", os.path.join(D, "ca.pem"), "-servername", "a.test"]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        out = b""
        deadline = time.monotonic() + 10
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        sent_r = False
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            if not sent_r and b"hello" in out.split(b"---\n")[-1]:
                p.stdin.write(b"R\n")
                p.stdin.flush()
                sent_r = True
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
        text = out.decode(errors="replace")
        if not sent_r or "RENEGOTIATING" not in text or "no renegotiation" not in text:
            fail("a renegotiation was not refused:\n%s" % text)
        got, _ = tls_echo(port)
        if got != b"ping\n":
            fail("no echo after a refused renegotiation")
    finally:
        finish(proc, log, "renegotiation")
    print("ok: renegotiation refused (no_renegotiation alert), the server keeps serving")


def t_self_signed():
    port = free_port()
    proc, log = start(listener(port, 'certificate = "self-signed";'))
    try:
        wait_port(port, proc=proc)
        out, rc = s_client(port, data=b"dev\n", verify=False)
        if "dev" not in out or "self-signed certificate" not in out:
            fail("self-signed: expected an echo and a verification error:\n%s" % out)
    finally:
        text = finish(proc, log, "self-signed")
    if "self-signed certificate generated at start" not in text:
        fail("self-signed: no warning in the log:\n%s" % text)
    print("ok: certificate = \"self-signed\" serves, and warns")

    # With a key path the pair is made once, saved (0600) and loaded again by the next
    # start: the same certificate (as Postfix's snakeoil), so a client may pin it.
    saved = os.path.join(D, "selfsigned.pem")
    fingerprints = []
    for round_ in range(2):
        port = free_port()
        proc, log = start(listener(port, 'certificate = "self-signed"; key = "%s";' % saved))
        try:
            wait_port(port, proc=proc)
            out, rc = s_client(port, "-showcerts", data=b"dev\n", verify=False)
            if "dev" not in out:
                fail("saved self-signed: no echo:\n%s" % out)
        finally:
            text = finish(proc, log, "self-signed saved")
        if round_ == 0 and "saved to " + saved not in text:
            fail("saved self-signed: the first start did not say it saved the pair:\n" + text)
        if round_ == 1 and "self-signed certificate saved in " + saved not in text:
            fail("saved self-signed: the second start did not load the saved pair:\n" + text)
        if os.stat(saved).st_mode & 0o077:
            fail("saved self-signed: the key file is readable by others")
        pem = out[out.index("-----BEGIN CERTIFICATE-----"):out.index("-----END CERTIFICATE-----")]
        fingerprints.append(pem)
    if fingerprints[0] != fingerprints[1]:
        fail("saved self-signed: the second start served another certificate")
    print("ok: certificate = \"self-signed\" with a key path is made once and reused")


def t_config_errors():
    port = free_port()
    cases = [
        (a_cert() + ' ciphers = "NOPE-NOT-A-CIPHER";', "ecshardd.conf:2", "ciphers"),
        (a_cert() + ' min_version = "TLSv1.3"; max_version = "TLSv1.2";', "ecshardd.conf:2",
         "min_version"),
        (a_cert() + ' sni = { x = { certificate = "%s/b.pem"; key = "%s/missing.key"; }; };'
         % (D, D), "ecshardd.conf:2", "missing.key"),
        ('certificate = "%s/a.pem";' % D, "ecshardd.conf", "needs both certificate and key"),
        (a_cert() + ' client_auth = "required";', "ecshardd.conf:2", "client_ca"),
        (a_cert() + ' min_version = "SSLv3";', "ecshardd.conf:2", "must be one of"),
    ]
    for tls, loc, word in cases:
        rc, text = start(listener(port, tls), expect_fail=True)
        if rc == 0 or loc not in text or word not in text:
            fail("bad tls section (%s) should fail at %s naming %s; rc %d:\n%s" %
                 (tls, loc, word, rc, text))
    print("ok: %d bad tls sections refused with file:line" % len(cases))


def main():
    global ecshardd
    ecshardd = sys.argv[1]
    if shutil.which("openssl") is None:
        print("the openssl command is not installed: skipped")
        sys.exit(77)
    try:
        make_certs()
        t_config_errors()
        t_versions_resumption_alpn_sni()
        t_ticket_key_file_across_restart()
        t_client_certs()
        t_no_resume_around_client_auth()
        t_handshake_timeout_garbage_tiny_buffers()
        t_no_renegotiation()
        t_self_signed()
    finally:
        shutil.rmtree(D, ignore_errors=True)


if __name__ == "__main__":
    main()
