"""The SMTP module loses nothing it acknowledged: Postfix's smtp-source sends messages
over several sessions to ecshardd in spool mode, ecshardd is killed with SIGKILL in the
middle, and every message that got "250 ... queued as ID" (smtp-source -v logs the
replies) must be complete in spool/new/ID. Then ecshardd starts again on the same spool
and accepts mail. Bounded in time. Exits 77 (skipped) when smtp-source is not installed.

usage: smtp_crash.py ECSHARDD"""
import glob
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

from common import only_listeners, fail, free_port, stop, wait_port

SIZE = 2000  # smtp-source -l: payload bytes per message


def start(ecshardd, spool, port):
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [ecshardd, "--shards", "2",
         *only_listeners(ecshardd, "smtp"),
         "--set", 'listener.smtp.listen="127.0.0.1:%d"' % port,
         "--set", 'smtp.spool_dir="%s"' % spool,
         "--set", "smtp.max_sessions_per_ip=0",
         "--set", 'log.level="warning"'],
        stderr=log)
    wait_port(port, proc=proc)
    return proc, log


def complete(path):
    """None if the file holds a whole smtp-source message, else what is wrong."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"Return-Path: <") or b"\r\nX-Envelope-To: <" not in data:
        return "no envelope block"
    sep = data.find(b"\r\n\r\n")
    if sep < 0:
        return "no end of headers"
    body = data[sep + 4:]
    # smtp-source's payload: SIZE bytes of digits and X, in CRLF lines, and a final CRLF.
    if len(body) != SIZE + 2 or not body.endswith(b"\r\n") or re.search(rb"[^0-9X\r\n]", body):
        return "body of %d bytes, expected %d" % (len(body), SIZE + 2)
    return None


def main():
    ecshardd = sys.argv[1]
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.path.exists(source):
        print("smtp-source is not installed: skipped")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="ecshard-smtp-crash-")
    spool = os.path.join(tmp, "spool")
    port = free_port()
    proc, log = start(ecshardd, spool, port)
    out = open(os.path.join(tmp, "source.log"), "w+")
    client = subprocess.Popen(
        ["timeout", "60", source, "-v", "-d", "-s", "8", "-m", "1000000", "-l", str(SIZE),
         "127.0.0.1:%d" % port],
        stdout=out, stderr=subprocess.STDOUT)
    try:
        # Let it run until some messages are in (bounded), then kill -9 mid-stream.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(os.listdir(os.path.join(spool, "new"))
                                                  if os.path.isdir(os.path.join(spool, "new"))
                                                  else []) < 200:
            if proc.poll() is not None:
                fail("ecshardd exited early with %s" % proc.returncode)
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
        out.seek(0)
        acked = re.findall(r"<<< 250 2\.0\.0 Ok: queued as ([0-9A-F]+)", out.read())
        if len(acked) < 50:
            fail("only %d messages were acknowledged before the kill: the test proves nothing"
                 % len(acked))
        bad = []
        for qid in acked:
            path = os.path.join(spool, "new", qid)
            if not os.path.exists(path):
                bad.append("%s: acknowledged, not in new/" % qid)
            else:
                why = complete(path)
                if why is not None:
                    bad.append("%s: %s" % (qid, why))
        if bad:
            fail("%d of %d acknowledged messages lost or incomplete:\n%s"
                 % (len(bad), len(acked), "\n".join(bad[:20])))
        # Every file in new/ is complete, acknowledged or not (the rename comes after fsync).
        for path in glob.glob(os.path.join(spool, "new", "*")):
            why = complete(path)
            if why is not None:
                fail("%s in new/ is incomplete: %s" % (path, why))
        before = len(os.listdir(os.path.join(spool, "new")))
        leftovers = len(os.listdir(os.path.join(spool, "tmp")))

        # Restart on the same spool: it serves again, nothing is lost.
        port = free_port()
        proc, log = start(ecshardd, spool, port)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.sendmail("after@example.org", ["crash@example.net"], b"Subject: after\r\n\r\nok\r\n")
        after = len(os.listdir(os.path.join(spool, "new")))
        if after != before + 1:
            fail("after the restart new/ holds %d files, expected %d" % (after, before + 1))
        rc = stop(proc)
        if rc != 0:
            log.seek(0)
            fail("ecshardd exited with %d after the restart:\n%s" % (rc, log.read()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if client.poll() is None:
            client.kill()
            client.wait()
        out.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok: %d acknowledged messages all complete after kill -9 (%d files in new/, %d left in tmp/)"
          % (len(acked), before, leftovers))


if __name__ == "__main__":
    main()
