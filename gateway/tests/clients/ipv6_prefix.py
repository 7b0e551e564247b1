#!/usr/bin/env python3
"""Per-IP limits count an IPv6 client by its /64 (issue 19).

Runs inside a network namespace of its own (`unshare -rn`, started by gateway/tests/security.rs):
puts addresses of two /64 prefixes on the namespace's loopback, starts the ringcast binary with
the given configuration (max_connections_per_ip = 2), opens WebSocket handshakes from four
source addresses and prints one JSON line: {"statuses": {source: HTTP status}}. Bounded: every
socket has a timeout and the server is killed at the end.
"""
import json
import socket
import subprocess
import sys

SAME = ["fd00:1:2:3::a", "fd00:1:2:3::b", "fd00:1:2:3::c"]
OTHER = "fd00:1:2:4::a"
REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: ringcast.v1\r\n\r\n"
)


def main():
    binary, config = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in SAME + [OTHER]:
        subprocess.run(["ip", "-6", "addr", "add", address + "/64", "dev", "lo", "nodad"], check=True)
    server = subprocess.Popen([binary, "--config", config], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        public = next(w for w in line.split() if w.startswith("public="))
        port = int(public.rsplit(":", 1)[1])
        held, statuses = [], {}
        for source in SAME + [OTHER]:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(5)
            s.bind((source, 0))
            s.connect((SAME[0], port))
            s.sendall(REQUEST)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            statuses[source] = int(head.split()[1]) if head else 0
            held.append(s)
        print(json.dumps({"statuses": statuses}), flush=True)
    finally:
        server.kill()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
