"""scripts/check_slow_cases.py (fl_deploy/harness/check_slow_cases.py): the throttling relay carries every byte both ways and
counts them; the command refuses an unknown case. The cases themselves run in that command (docs/reliability.md)."""

import hashlib
import os
import socket
import threading

import pytest

from fl_deploy.harness import check_slow_cases
from fl_deploy.harness.local_federation import free_port


def test_the_relay_carries_every_byte_both_ways():
    echo = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    relay = check_slow_cases.ThrottledRelay(free_port(), echo.getsockname()[1], rate=200 * check_slow_cases.MB)
    payload = os.urandom(3 << 20)
    try:
        with socket.create_connection(relay.listener.getsockname()) as c:
            sent = threading.Thread(target=c.sendall, args=(payload,))
            sent.start()
            got = bytearray()
            while len(got) < len(payload):
                got += c.recv(1 << 20)
            sent.join()
    finally:
        relay.close()
        echo.close()
    assert hashlib.sha256(bytes(got)).digest() == hashlib.sha256(payload).digest()
    assert relay.moved == {"up": len(payload), "down": len(payload)}
    # No idle timeout on either side: NVFlare's connections may stay quiet for long (its heartbeat is 60 s).
    assert [(c.gettimeout(), s.gettimeout()) for c, s in relay.connections] == [(None, None)]


def test_the_bucket_paces_by_bytes():
    """Its schedule, not a timing: each take reserves n / rate seconds of the link after the previous one."""
    bucket = check_slow_cases.TokenBucket(rate=1e12)
    start = bucket._next
    bucket.take(10**6)
    bucket.take(10**6)
    assert bucket._next >= start + 2 * 10**6 / 1e12


def test_an_unknown_case_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        check_slow_cases.main(["--cases", "fast-link"])
    assert e.value.code == 2 and "unknown case(s) fast-link: choose from slow-link, cold-starts" in capsys.readouterr().err
