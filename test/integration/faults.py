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
import socket
import subprocess
import sys
import tempfile
import threading

from common import FAULT_ROUNDS, check_fault_report, fault_env, only_listeners, echo_ok, fail, free_port, stop, wait_port

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
    env = fault_env(libfault, env_faults)
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
    check_fault_report(out, env_faults, tolerate_reset,
                       "results %r" % sorted(v[0] for v in results.values()))


def main():
    ecshardd, libfault = sys.argv[1], sys.argv[2]
    for faults, tolerate_reset in FAULT_ROUNDS:
        round_(ecshardd, libfault, faults, tolerate_reset)
    print("ok")


if __name__ == "__main__":
    main()
