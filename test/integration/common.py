"""Helpers for the integration tests that drive ecshardd (and real peers) over loopback.

Every wait is bounded; every process started is stopped by PID at the end."""
import os
import re
import signal
import socket
import subprocess
import sys
import time


def only_listeners(ecshardd, *keep):
    """--set arguments that switch off every listener of ecshardd's embedded default except
    those named in `keep`: its fixed ports and socket path would collide between tests
    running in parallel (and a new default listener must not break old tests)."""
    cfg = subprocess.run([ecshardd, "--print-config"], capture_output=True, text=True).stdout
    args = []
    if "\nlistener = {\n" not in cfg:
        return args
    section = cfg.split("\nlistener = {\n", 1)[1].split("\n};", 1)[0]
    for line in section.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith("= {"):
            name = line.strip().split(" ", 1)[0]
            if name not in keep:
                args += ["--set", "listener.%s.enabled=false" % name]
    return args


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("FAIL: server exited early with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("FAIL: nothing listens on port %d after %.0f s" % (port, timeout))


def echo_ok(sock, payload=b"ping\n", timeout=1.0):
    """True if the connection echoes `payload` back within `timeout`."""
    sock.settimeout(timeout)
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:
        return False


def stop(proc, timeout=15.0):
    """SIGTERM, then wait; returns the exit status (SIGKILL after `timeout`)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Where it hangs, in the test's output (gdb is on the CI machines; if not, skip).
            try:
                bt = subprocess.run(["gdb", "-p", str(proc.pid), "-batch", "-ex",
                                     "thread apply all bt"], capture_output=True, text=True,
                                    timeout=60).stdout
                print(bt[-20000:], flush=True)
            except (OSError, subprocess.TimeoutExpired):
                pass
            proc.kill()
            proc.wait()
            raise SystemExit("FAIL: pid %d did not stop within %.0f s of SIGTERM" % (proc.pid, timeout))
    return proc.returncode


# RSS says little under ASan (quarantine) or TSan (shadow memory): sanitized builds set
# ECSHARD_CHECK_RSS=0 and the tests check the framework's own memtype counters instead.
CHECK_RSS = os.environ.get("ECSHARD_CHECK_RSS", "1") != "0"


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))


def live_bytes(admin_port):
    """Bytes the server holds through ec_malloc, all memtypes summed, read from the admin
    listener's /metrics (ecshard_memtype_live_bytes)."""
    with socket.create_connection(("127.0.0.1", admin_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(10)
        body = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("ecshard_memtype_live_bytes{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    if total == 0:
        raise SystemExit("FAIL: /metrics on port %d has no ecshard_memtype_live_bytes" % admin_port)
    return total


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


# ---- the LD_PRELOAD fault interposer (test/fault/fault_preload.c) --------------------------

# The two rounds every fault test runs: faults without resets (every byte must arrive), then
# with resets in the middle of writes (the server must keep serving).
FAULT_ROUNDS = (
    ({"FAULT_SHORT": "40", "FAULT_EINTR": "10", "FAULT_EAGAIN": "10", "FAULT_SEED": "7"}, False),
    ({"FAULT_SHORT": "30", "FAULT_EINTR": "5", "FAULT_EAGAIN": "5", "FAULT_RESET": "30",
      "FAULT_SEED": "11"}, True),
)


def fault_env(libfault, faults):
    """The environment for a server run under the interposer with `faults` set."""
    env = dict(os.environ)
    env.update(faults)
    env["LD_PRELOAD"] = libfault + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    return env


def check_fault_report(out, faults, tolerate_reset, outcome):
    """Fails unless the server's output `out` has the interposer's report with faults of
    every kind asked for, and no sanitizer report; prints the counts and `outcome`."""
    m = re.search(r"fault_preload: calls=(\d+) short=(\d+) eintr=(\d+) eagain=(\d+) reset=(\d+)", out)
    if not m:
        fail("no fault report from the interposer:\n" + out[-2000:])
    calls, short, eintr, eagain, reset = map(int, m.groups())
    print("faults %r: calls=%d short=%d eintr=%d eagain=%d reset=%d; %s" %
          (faults, calls, short, eintr, eagain, reset, outcome), flush=True)
    if short == 0 or eintr == 0 or eagain == 0 or (tolerate_reset and reset == 0):
        fail("the interposer injected too few faults")
    if "ERROR: AddressSanitizer" in out or "LeakSanitizer" in out or "ThreadSanitizer" in out:
        fail("sanitizer report:\n" + out[-4000:])
