#!/usr/bin/env python3
"""Checks a participant container runs against its startup kit (mounted at /kit).

    fl-kit-check resolves        a site: the server name its kit dials resolves here (entrypoint, before start)
    fl-kit-check healthy server  the server's FL port accepts connections (compose healthcheck)
    fl-kit-check healthy site    the site is connected to the server now and has registered since this container
                                 started (compose healthcheck; a log line from before a restart does not count)

The server name and port come from the kit itself (startup/fed_client.json / fed_server.json): the name is the
server certificate's identity, so a site must reach the server by exactly that name.
"""

import json
import os
import socket
import sys

KIT = os.environ.get("FL_KIT", "/kit")
WORKSPACE = os.environ.get("FL_WORKSPACE", "/workspace")
LOG_START = os.path.join(WORKSPACE, "tmp", "log_start")  # size of log.txt when the container started
REGISTERED = b"Successfully registered client"


def server_target(role: str) -> tuple:
    name = "fed_server.json" if role == "server" else "fed_client.json"
    with open(os.path.join(KIT, "startup", name)) as f:
        target = json.load(f)["servers"][0]["service"]["target"]
    host, port = target.rsplit(":", 1)
    return host, int(port)


def connected_to(port: int) -> bool:
    """An ESTABLISHED TCP connection to the remote port, from this container's network namespace."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def registered_since_start() -> bool:
    log = os.path.join(WORKSPACE, "log.txt")
    try:
        with open(LOG_START) as f:
            start = int(f.read().strip() or 0)
        size = os.path.getsize(log)
    except (OSError, ValueError):
        return False
    if size < start:  # rotated since the start: the line is in the new file or the one rotated out
        return any(_contains(path, 0) for path in (log, log + ".1"))
    return _contains(log, start)


def _contains(path: str, offset: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return REGISTERED in f.read()
    except OSError:
        return False


def main(argv) -> int:
    if argv[:1] == ["resolves"]:
        host, _ = server_target("site")
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as e:
            print(f"error: the server name {host!r} from this site's kit does not resolve here ({e.strerror}). "
                  "On the server's host, run the site in the same compose project (docker compose up -d); on "
                  "another host, set FL_SERVER_ADDRESS in .env to the server host's IP (the site's compose file "
                  "maps the name to it). Do not edit the kit: the name is the server certificate's identity.",
                  file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["healthy"] and argv[1:] == ["server"]:
        _, port = server_target("server")
        socket.create_connection(("127.0.0.1", port), 3).close()
        return 0
    if argv[:1] == ["healthy"] and argv[1:] == ["site"]:
        _, port = server_target("site")
        return 0 if connected_to(port) and registered_since_start() else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
