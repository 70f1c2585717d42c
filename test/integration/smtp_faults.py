"""ecshardd's SMTP listener (spool mode) with socket I/O made to misbehave by the LD_PRELOAD
interposer of test/fault/fault_preload.c: short reads and writes, EINTR and spurious EAGAIN,
then resets in the middle of writes.

Round 1 (no resets): clients pipeline messages with dot-stuffed lines and multi-kilobyte
bodies; every message gets its 250 and is in spool/new exactly as sent (unstuffed). Round 2
(resets too): sessions die at random, every message that got a 250 is still complete in the
spool, and afterwards a fresh session is served. ecshardd stops cleanly (nothing leaked
under ASan/LSan).

usage: smtp_faults.py ECSHARDD LIBFAULT"""
import glob
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

from common import FAULT_ROUNDS, check_fault_report, fault_env, only_listeners, fail, free_port, stop, wait_port

CLIENTS = 6
MESSAGES = 15


def body_for(rnd, tag):
    lines = ["Subject: %s" % tag, ""]
    for i in range(rnd.randint(1, 80)):
        line = "".join(rnd.choice("abcdefghij .") for _ in range(rnd.randint(0, 120)))
        lines.append(line)
    lines.append("end %s" % tag)
    return ("\r\n".join(lines) + "\r\n").encode()


def stuff(body):
    out = []
    for line in body.split(b"\r\n")[:-1]:
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out) + b"\r\n"


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def reply(self):
        while True:
            m = re.search(rb"^(\d{3}) [^\r\n]*\r\n", self.buf, re.M)
            if m:
                self.buf = self.buf[m.end():]
                return int(m.group(1)), m.group(0)
            chunk = self.s.recv(65536)
            if not chunk:
                raise OSError("closed")
            self.buf += chunk


def client(port, seed, results, tolerate_reset):
    rnd = random.Random(seed)
    acked = {}
    try:
        c = Conn(port)
        if c.reply()[0] != 220:
            raise OSError("no greeting")
        c.s.sendall(b"EHLO f%d.test\r\n" % seed)
        if c.reply()[0] != 250:
            raise OSError("EHLO")
        for m in range(MESSAGES):
            tag = "c%d-m%d" % (seed, m)
            body = body_for(rnd, tag)
            c.s.sendall(b"MAIL FROM:<%s@f.test>\r\nRCPT TO:<r@f.test>\r\nDATA\r\n" % tag.encode())
            codes = [c.reply()[0] for _ in range(3)]
            if codes != [250, 250, 354]:
                raise OSError("codes %r" % codes)
            data = stuff(body) + b".\r\n"
            for i in range(0, len(data), 700):  # in pieces, so that reads split anywhere
                c.s.sendall(data[i:i + 700])
            code, text = c.reply()
            if code != 250:
                raise OSError("message %s: %r" % (tag, text))
            acked[re.search(rb"queued as (\w+)", text).group(1).decode()] = body
        c.s.sendall(b"QUIT\r\n")
        c.reply()
        c.s.close()
        results[seed] = ("ok", acked)
    except OSError as e:
        results[seed] = ("reset" if tolerate_reset else "error %s" % e, acked)


def round_(ecshardd, libfault, env_faults, tolerate_reset):
    tmp = tempfile.mkdtemp(prefix="ecshard-smtp-faults-")
    port = free_port()
    env = fault_env(libfault, env_faults)
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        # epoll: the interposer sees libc's send(); on the uring poller the replies go out
        # through io_uring (write-behind), where test_event_io's write-behind tests cover
        # short sends, full sockets and resets.
        [ecshardd, "--shards", "2", "--set", 'event_loop.poller="epoll"',
         *only_listeners(ecshardd, "smtp"),
         "--set", 'listener.smtp.listen="127.0.0.1:%d"' % port,
         "--set", 'smtp.spool_dir="%s/spool"' % tmp,
         "--set", 'log.level="warning"'],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        results = {}
        threads = [threading.Thread(target=client, args=(port, i, results, tolerate_reset))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if len(results) != CLIENTS or any(v[0] not in ("ok", "reset") for v in results.values()):
            fail("clients: %r" % {k: v[0] for k, v in results.items()})
        acked = {}
        for v in results.values():
            acked.update(v[1])
        if not tolerate_reset and len(acked) != CLIENTS * MESSAGES:
            fail("%d messages acknowledged, expected %d" % (len(acked), CLIENTS * MESSAGES))
        for qid, body in acked.items():
            path = os.path.join(tmp, "spool", "new", qid)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                fail("message %s got a 250 and is not in new/" % qid)
            if not data.endswith(body) or b"\r\n\r\n" not in data:
                fail("message %s in new/ differs from what was sent" % qid)
        # Still serving: a fresh session gets its greeting (resets may hit a few tries).
        served = False
        for _ in range(10):
            try:
                c = Conn(port)
                if c.reply()[0] == 220:
                    c.s.sendall(b"QUIT\r\n")
                    served = True
                    c.s.close()
                    break
            except OSError:
                pass
        if not served:
            fail("no fresh session was served after the faults")
    finally:
        rc = stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    log.seek(0)
    out = log.read()
    if rc != 0:
        fail("ecshardd exited with %s:\n%s" % (rc, out[-3000:]))
    check_fault_report(out, env_faults, tolerate_reset,
                       "%d messages acknowledged; %r" % (len(acked), sorted(v[0] for v in results.values())))


def main():
    ecshardd, libfault = sys.argv[1], sys.argv[2]
    for faults, tolerate_reset in FAULT_ROUNDS:
        round_(ecshardd, libfault, faults, tolerate_reset)
    print("ok")


if __name__ == "__main__":
    main()
