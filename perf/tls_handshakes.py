"""perf/tls_handshakes.py PORT N: N sequential full TLS handshakes to 127.0.0.1:PORT, each
with one `GET /` and `Connection: close` (a new client context per connection, so no
session is ever resumed). The deterministic load for run-tls.sh's INSTR=1 count."""
import socket
import ssl
import sys


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(n):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(4096):
                    pass


if __name__ == "__main__":
    main()
