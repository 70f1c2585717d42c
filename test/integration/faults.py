"""ecshardd's echo listener with socket I/O made to misbehave by an LD_PRELOAD interposer
(test/fault/fault_preload.c): short reads and writes, EINTR and spurious EAGAIN on every
call with some probability, then resets in the middle of writes.

Round 1 (no resets): every byte of every client comes back, in order, through the
faults. Round 2 (resets too): connections die at random, but the server keeps serving:
after the storm a fresh connection is echoed, and the process stops cleanly on SIGTERM
(under ASan/LSan, with nothing leaked). Both rounds check that faults were injected.

usage: faults.py ECSHARDD LIBFAULT"""
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading

from common import only_listeners, echo_ok, fail, free_port, stop, wait_port

CLIENTS = 8
BYTES = 256 * 1024


def client(port, seed, results, tolerate_reset):
    rnd = random.Random(seed)
    data = bytes(rnd.getrandbits(8) for _ in range(BYTES))
    got = bytearray()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        sent = 0
        while sent < len(data):
            n = rnd.randint(1, 32768)
            s.sendall(data[sent:sent + n])
            sent += n
            # Read what is there so that neither side's buffers fill up.
            s.settimeout(0.01)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except socket.timeout:
                pass
            s.settimeout(20)
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
    except OSError as e:
        results[seed] = ("reset", len(got)) if tolerate_reset else ("error %s" % e, len(got))
        return
    if bytes(got) == data:
        results[seed] = ("ok", len(got))
    elif tolerate_reset and data.startswith(bytes(got)):
        results[seed] = ("reset", len(got))
    else:
        results[seed] = ("corrupt", len(got))


def round_(ecshardd, libfault, env_faults, tolerate_reset):
    port = free_port()
    env = dict(os.environ)
    env.update(env_faults)
    env["LD_PRELOAD"] = libfault + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [ecshardd, "--shards", "2", *only_listeners(ecshardd, "echo"),
         "--set", "listener.echo.listen=127.0.0.1:%d" % port],
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
        bad = {k: v for k, v in results.items() if v[0] not in ("ok", "reset")}
        if len(results) != CLIENTS or bad:
            fail("clients: %r" % results)
        if not tolerate_reset and any(v[0] != "ok" for v in results.values()):
            fail("a client lost data without resets: %r" % results)
        # The server still serves: a fresh connection is echoed (resets may hit a few).
        served = False
        for _ in range(10):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if echo_ok(s, b"still there?\n", timeout=5):
                        served = True
                        break
            except OSError:
                pass
        if not served:
            fail("no fresh connection was served after the faults")
    finally:
        rc = stop(proc)
    log.seek(0)
    out = log.read()
    if rc != 0:
        fail("ecshardd exited with %s:\n%s" % (rc, out[-3000:]))
    m = re.search(r"fault_preload: calls=(\d+) short=(\d+) eintr=(\d+) eagain=(\d+) reset=(\d+)", out)
    if not m:
        fail("no fault report from the interposer:\n" + out[-2000:])
    calls, short, eintr, eagain, reset = map(int, m.groups())
    print("faults %r: calls=%d short=%d eintr=%d eagain=%d reset=%d; results %r" %
          (env_faults, calls, short, eintr, eagain, reset, sorted(v[0] for v in results.values())))
    if short == 0 or eintr == 0 or eagain == 0 or (tolerate_reset and reset == 0):
        fail("the interposer injected too few faults")
    if "ERROR: AddressSanitizer" in out or "LeakSanitizer" in out or "ThreadSanitizer" in out:
        fail("sanitizer report:\n" + out[-4000:])


def main():
    ecshardd, libfault = sys.argv[1], sys.argv[2]
    round_(ecshardd, libfault, {"FAULT_SHORT": "40", "FAULT_EINTR": "10", "FAULT_EAGAIN": "10",
                                "FAULT_SEED": "7"}, False)
    round_(ecshardd, libfault, {"FAULT_SHORT": "30", "FAULT_EINTR": "5", "FAULT_EAGAIN": "5",
                                "FAULT_RESET": "30", "FAULT_SEED": "11"}, True)
    print("ok")


if __name__ == "__main__":
    main()
