"""ecshardd's SMTP module against real clients: swaks (plain, pipelined, STARTTLS) and
Python's smtplib (several recipients, STARTTLS, refusals), in spool mode (what lands in
spool/new) and with --set smtp.mode=sink. The certificate is made with the openssl CLI at
run time. Exits 77 (skipped) when swaks is not installed.

usage: smtp.py ECSHARDD"""
import glob
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile

from common import only_listeners, fail, free_port, stop, wait_port


def start(ecshardd, tmp, port, *extra):
    log = tempfile.TemporaryFile("w+")
    cmd = [ecshardd, "--shards", "2",
           *only_listeners(ecshardd, "smtp"),
           "--set", 'listener.smtp.listen="127.0.0.1:%d"' % port,
           "--set", 'listener.smtp.tls.certificate="%s/cert.pem"' % tmp,
           "--set", 'listener.smtp.tls.key="%s/key.pem"' % tmp,
           "--set", 'listener.smtp.tls.mode="starttls"',
           "--set", 'smtp.hostname="mx.test"',
           "--set", 'smtp.spool_dir="%s/spool"' % tmp,
           "--set", 'log.level="notice"']
    for e in extra:
        cmd += ["--set", e]
    proc = subprocess.Popen(cmd, stderr=log)
    wait_port(port, proc=proc)
    return proc, log


def finish(proc, log):
    rc = stop(proc)
    log.seek(0)
    err = log.read()
    if rc != 0:
        fail("ecshardd exited with %d:\n%s" % (rc, err))
    return err


def spooled(tmp):
    files = {}
    for path in glob.glob(os.path.join(tmp, "spool", "new", "*")):
        with open(path, "rb") as f:
            files[os.path.basename(path)] = f.read()
    return files


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--timeout", "10",
                        "--from", "alice@example.org", "--to", "bob@example.net"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return r.returncode, r.stdout.decode(errors="replace")


def main():
    ecshardd = sys.argv[1]
    if shutil.which("swaks") is None:
        print("swaks is not installed: skipped")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="ecshard-smtp-it-")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                        "-subj", "/CN=mx.test", "-keyout", tmp + "/key.pem",
                        "-out", tmp + "/cert.pem"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spool_mode(ecshardd, tmp)
        sink_mode(ecshardd, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok: swaks and smtplib conversations, pipelining, STARTTLS, spool and sink modes")


def spool_mode(ecshardd, tmp):
    port = free_port()
    proc, log = start(ecshardd, tmp, port)
    try:
        # swaks, lock-step, with a dot-stuffed line in the body.
        rc, out = swaks(port, "--body", "hello\n.leading dot\n")
        if rc != 0 or "250 2.0.0 Ok: queued as" not in out:
            fail("swaks failed (%d):\n%s" % (rc, out))
        # swaks with PIPELINING, and over STARTTLS.
        rc, out = swaks(port, "--pipeline", "--body", "pipelined")
        if rc != 0 or "queued as" not in out:
            fail("swaks --pipeline failed (%d):\n%s" % (rc, out))
        rc, out = swaks(port, "--tls", "--body", "over tls")
        if rc != 0 or "queued as" not in out or "TLS started" not in out:
            fail("swaks --tls failed (%d):\n%s" % (rc, out))
        # smtplib: several recipients, then STARTTLS.
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            code, banner = s.ehlo("client.test")
            if code != 250 or b"PIPELINING" not in banner or b"STARTTLS" not in banner:
                fail("EHLO: %d %r" % (code, banner))
            refused = s.sendmail("carol@example.org", ["d@example.net", "e@example.net"],
                                 b"Subject: smtplib\r\n\r\nfrom smtplib\r\n")
            if refused:
                fail("recipients refused: %r" % refused)
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo("client.test")
            s.sendmail("tls@example.org", ["f@example.net"], b"Subject: tls\r\n\r\nsecret\r\n")
            # Refusals: out of order, bad syntax, unknown command.
            for cmd, want in (("RCPT TO:<x@example.net>", 503), ("MAIL FROM:nobrackets", 501),
                              ("FROB", 500), ("VRFY bob", 252)):
                code, _ = s.docmd(cmd)
                if code != want:
                    fail("%s: %d, expected %d" % (cmd, code, want))
        files = spooled(tmp)
        if len(files) != 5:
            fail("expected 5 spooled messages, found %d" % len(files))
        bodies = list(files.values())
        if not any(b"\r\nhello\r\n.leading dot\r\n" in b for b in bodies):
            fail("the dot-stuffed swaks message was not unstuffed as sent")
        multi = [b for b in bodies if b"from smtplib" in b]
        if len(multi) != 1 or b"X-Envelope-To: <d@example.net>\r\nX-Envelope-To: <e@example.net>\r\n" not in multi[0] \
                or not multi[0].startswith(b"Return-Path: <carol@example.org>\r\n"):
            fail("envelope block of the smtplib message: %r" % multi[:1])
        if not any(b"with ESMTPS id" in b and b"secret" in b for b in bodies):
            fail("the message sent under TLS is not marked ESMTPS")
        if glob.glob(os.path.join(tmp, "spool", "tmp", "*")):
            fail("files left in spool/tmp")
    finally:
        finish(proc, log)


def sink_mode(ecshardd, tmp):
    shutil.rmtree(os.path.join(tmp, "spool"), ignore_errors=True)
    port = free_port()
    proc, log = start(ecshardd, tmp, port, 'smtp.mode="sink"')
    try:
        for args in ((), ("--pipeline",)):
            rc, out = swaks(port, *args)
            if rc != 0 or "250 2.0.0 Ok: queued as" not in out:
                fail("swaks %r in sink mode failed (%d):\n%s" % (args, rc, out))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: sink\r\n\r\nx\r\n")
        if os.path.exists(os.path.join(tmp, "spool")):
            fail("sink mode created a spool")
    finally:
        finish(proc, log)


if __name__ == "__main__":
    main()
