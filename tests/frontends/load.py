"""A known load for the front-end tests: a dual-stack listener and an
IPv4-only one, each sent new IPv4 connections at a steady rate.

    load.py RATE_DUAL RATE_V4 SECONDS [BURST]

prints {"dual": PORT, "v4": PORT} once both listen, then connects RATE_DUAL
times a second to the dual-stack port and RATE_V4 times to the IPv4 one for
SECONDS (after BURST connections to the dual-stack port as fast as it can,
when given), then {"done": [dual, v4]} and waits for stdin to close.
"""

import json
import socket
import sys
import threading
import time


def listener(family, host):
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(4096)
    return s


def accept_forever(s):
    while True:
        c, _ = s.accept()
        c.close()


def main():
    rate_dual, rate_v4, seconds = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    burst = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    dual, v4 = listener(socket.AF_INET6, "::"), listener(socket.AF_INET, "127.0.0.1")
    for s in (dual, v4):
        threading.Thread(target=accept_forever, args=(s,), daemon=True).start()
    ports = {"dual": dual.getsockname()[1], "v4": v4.getsockname()[1]}
    print(json.dumps(ports), flush=True)
    sys.stdin.readline()   # go
    for _ in range(burst):
        socket.create_connection(("127.0.0.1", ports["dual"])).close()
    made = [0, 0]
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t = time.monotonic() - start
        for i, (name, rate) in enumerate((("dual", rate_dual), ("v4", rate_v4))):
            while made[i] < rate * t:
                socket.create_connection(("127.0.0.1", ports[name])).close()
                made[i] += 1
        time.sleep(0.005)
    print(json.dumps({"done": made}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
