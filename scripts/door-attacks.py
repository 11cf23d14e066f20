#!/usr/bin/env python3
"""Issue 32's connection attacks, as an anonymous client outside the
repository would send them (scripts/hostile-acceptance.sh runs this against
a host it started, whose open-files limits it lowered to 1,024):

  idle       1,100 TCP connections opened and left idle (no byte sent, no
             token), 62 from each of 127.0.0.2 to 127.0.0.19 so no per-client
             cap is what refuses them; meanwhile health must answer (each try
             within a 5 s client timeout, tried for 20 s: connections past
             the cap are closed until the header-read timeout frees some);
             then every connection must be closed by the server within 15 s.
  per-client 70 connections from 127.0.0.20 held open: the ones past the
             default cap of 64 are closed at once, while 127.0.0.1 is served.
  slow-body  a POST whose body comes one byte a second: cut with 408 (with
             the token in MYSIMBDP_TOKEN, when the host wants one).

  python3 scripts/door-attacks.py 127.0.0.1:PORT idle|per-client|slow-body

Prints one line, `ok <what it saw>` or `WRONG <what it saw>`; exit 1 when
WRONG.
"""

import os
import resource
import selectors
import socket
import sys
import time
import urllib.request


def connect(source, address):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(address)
    return sock


def health(host, port):
    """Whether GET /api/health answers 200 within 5 s."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def idle(host, port):
    socks = []
    refused_at_connect = 0
    for n in range(1100):
        source = f"127.0.0.{2 + n % 18}"
        try:
            socks.append(connect(source, (host, port)))
        except OSError:
            refused_at_connect += 1
    # Past the cap a new connection is closed at once (as nginx's
    # worker_connections): health is answered once the header-read timeout
    # has closed idle ones, each try bounded by 5 s.
    tries_until = time.monotonic() + 20
    healthy = health(host, port)
    while not healthy and time.monotonic() < tries_until:
        time.sleep(0.5)
        healthy = health(host, port)
    closed = closed_within(socks, 15)
    for sock in socks:
        sock.close()
    seen = (
        f"{len(socks)} idle connections opened ({refused_at_connect} refused at connect), health "
        f"{'answered' if healthy else 'UNANSWERED'}, {closed} of {len(socks)} closed by the server within 15 s"
    )
    return healthy and closed == len(socks) and len(socks) + refused_at_connect == 1100, seen


def closed_within(socks, seconds):
    """How many of `socks` the server closed (EOF or reset) within `seconds`
    of now, waiting on all of them at once."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = set()
    deadline = time.monotonic() + seconds
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                data = key.fileobj.recv(1)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                closed.add(key.fileobj)
                selector.unregister(key.fileobj)
    selector.close()
    return len(closed)


def per_client(host, port):
    socks = [connect("127.0.0.20", (host, port)) for _ in range(70)]
    served = health(host, port)
    # The ones past the cap are closed at once; the rest stay open until
    # the header-read timeout (1 s in the acceptance script) closes them.
    closed = closed_within(socks, 0.5)
    for sock in socks:
        sock.close()
    seen = f"{closed} of 70 connections from 127.0.0.20 closed at once, 127.0.0.1 {'served' if served else 'NOT SERVED'}"
    return served and closed == 6, seen


def slow_body(host, port):
    # A tenant's token (MYSIMBDP_TOKEN) when the host wants one: the body is
    # read once the request is let in.
    token = f"Authorization: Bearer {os.environ['MYSIMBDP_TOKEN']}\r\n" if os.environ.get("MYSIMBDP_TOKEN") else ""
    sock = connect("127.0.0.1", (host, port))
    sock.sendall(
        f"POST /api/ingest HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n{token}"
        "content-length: 10000\r\n\r\n".encode()
    )
    started = time.monotonic()
    answer = b""
    sock.settimeout(1.0)
    while time.monotonic() - started < 30:
        try:
            sock.sendall(b" ")
        except OSError:
            pass
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer:
            break
    sock.close()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return " 408 " in status + " ", f"a body sent a byte a second was answered {status or 'NOTHING'}"


def main():
    # This client holds 1,100 sockets: its own soft open-files limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    if len(sys.argv) != 3 or sys.argv[2] not in ("idle", "per-client", "slow-body"):
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    attack = {"idle": idle, "per-client": per_client, "slow-body": slow_body}[sys.argv[2]]
    good, seen = attack(host, int(port))
    print(f"{'ok' if good else 'WRONG'} {seen}")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
