#!/usr/bin/env python3
"""Checks a participant container runs against its startup kit (mounted at /kit).

    fl-kit-check access ROLE     this container's user can read /kit and write /workspace and /hf-cache (entrypoint,
                                 before start): else one line naming the path, its owner and mode, and the fix
    fl-kit-check resolves        a site: the server name its kit dials resolves here (entrypoint, before start)
    fl-kit-check watch site      a site, in the background: while it is not connected, says every minute (first
                                 after WATCH_FIRST_S) which address it dials and why that fails
    fl-kit-check validity ROLE   the kit's certificate and root CA are valid by this container's clock (entrypoint,
                                 before start): prints until when; else one line (a clock behind the provisioning
                                 host's: the skew and the fix; an expired certificate: renew_kit.py) and exit 2
    fl-kit-check healthy server  the server's FL port accepts connections (compose healthcheck)
    fl-kit-check healthy site    the site is connected to the server now and has registered since this container
                                 started (compose healthcheck; a log line from before a restart does not count);
                                 when not connected, the health output says why, as `watch` does

The server name and port come from the kit itself (startup/fed_client.json / fed_server.json): the name is the
server certificate's identity, so a site must reach the server by exactly that name.
"""

import json
import os
import re
import socket
import ssl
import stat
import sys
import time

try:
    from fl_deploy import kit_expiry  # the project's checkout on the import path (tests, the admin container's /src)
except ImportError:
    # The image: docker/Dockerfile copies fl_deploy/kit_expiry.py beside fl-kit-check; a checkout run by path:
    # docker/../fl_deploy (standard library only, so it imports alone).
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:0] = [_here, os.path.join(os.path.dirname(_here), "fl_deploy")]
    import kit_expiry

KIT = os.environ.get("FL_KIT", "/kit")
WORKSPACE = os.environ.get("FL_WORKSPACE", "/workspace")
LOG_START = os.path.join(WORKSPACE, "tmp", "log_start")  # size of log.txt when the container started
REGISTERED = b"Successfully registered client"
HF_CACHE = os.environ.get("HF_HOME", "/hf-cache")
KIT_DATES = os.path.join(WORKSPACE, "tmp", "kit_dates.json")  # the kit's certificate dates, read at the start
WATCH_FIRST_S, WATCH_EVERY_S = 20, 60
CONNECT_TIMEOUT_S = 2.5  # the healthcheck's own timeout is 5 s


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


# --- access: ownership changes (FL_UID changed after the volumes exist, a kit unpacked by another user) ----------

def allowed(st, uid: int, gids: set, bits: int) -> bool:
    """Whether uid (in groups gids) has the rwx ``bits`` on a file with stat ``st`` (mode bits, as the kernel
    decides for an unprivileged user: owner class, else group class, else others)."""
    mode = st.st_mode
    if st.st_uid == uid:
        return (mode >> 6) & bits == bits
    if st.st_gid in gids:
        return (mode >> 3) & bits == bits
    return mode & bits == bits


def mount_source(path: str) -> str:
    """Where ``path`` (a mount point of this container) comes from on the host: a named volume's name or the
    host folder of a bind mount, from /proc/self/mountinfo; '' when unknown."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == path:
                    m = re.search(r"/volumes/([^/]+)/_data$", fields[3])
                    return f"volume {m.group(1)}" if m else fields[3]
    except OSError:
        pass
    return ""


def first_blocked(top: str, uid: int, gids: set, write: bool, limit: int = 20000):
    """(path, stat) of the first entry under ``top`` this user cannot use: read (and enter) for a kit (a read-only
    mount), also write for a workspace volume, where what this user owns counts as usable (it may chmod it); None
    when all can be used or ``top`` does not exist."""
    if not os.path.lexists(top):
        return None
    need_dir = 7 if write else 5
    need_file = 6 if write else 4

    def blocked(st, bits) -> bool:
        return not (write and st.st_uid == uid) and not allowed(st, uid, gids, bits)

    seen = 0
    for dirpath, dirnames, filenames in os.walk(top):
        st = os.lstat(dirpath)
        if blocked(st, need_dir):
            return dirpath, st
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and blocked(st, need_file):
                return path, st
            seen += 1
        if seen > limit:  # a big job store: its top levels tell already
            break
    return None


def access_problem(role: str, uid: int = None, gids: set = None, kit: str = KIT, workspace: str = WORKSPACE,
                   hf_cache: str = HF_CACHE) -> str:
    """One line naming the first path this container's user cannot use, its owner and mode, the user, and the fix;
    '' when everything is usable."""
    uid = os.getuid() if uid is None else uid
    gids = set(os.getgroups()) | {os.getgid()} if gids is None else gids
    image = os.environ.get("FL_IMAGE", "IMAGE")
    checks = [(kit, False)] + ([(workspace, True)] if role in ("server", "site") else []) + [(hf_cache, True)]
    for top, write in checks:
        found = first_blocked(top, uid, gids, write)
        if not found:
            continue
        path, st = found
        what = "write" if write else "read"
        source = mount_source(top)
        head = (f"error: {path} belongs to uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):04o}) and this container "
                f"runs as uid {uid}, so it cannot {what} it")
        if not write:
            host = source if source and not source.startswith("volume ") else "the kit folder"
            return (f"{head}: the kit was provisioned or unpacked by another user; fix: on the host, sudo chown -R "
                    f"{uid}:{uid} {host} (its keys stay private to that owner), or run the containers as uid "
                    f"{st.st_uid} (FL_UID={st.st_uid} in .env, then docker compose build)")
        volume = source[len("volume "):] if source.startswith("volume ") else ""
        chown = (f"docker run --rm -u 0 -v {volume}:/v --entrypoint chown {image} -R {uid}:{uid} /v" if volume
                 else f"sudo chown -R {uid}:{uid} {source or top}")
        return (f"{head}: {top} was written by a run as uid {st.st_uid} (FL_UID changed since, or the demo ran as "
                f"root before); fix: run as uid {st.st_uid} again (FL_UID={st.st_uid} in .env, then docker compose "
                f"build), or delete the volumes (docker compose down -v: the job store and workspaces go), or give "
                f"them to uid {uid}: {chown}")
    return ""


# --- validity: the kit's certificates by this container's clock (issue 24 cases 1, 2) -------------------------------

def kit_validity(now=None, kit: str = KIT, cache: str = KIT_DATES, refresh: bool = True) -> tuple:
    """kit_expiry.check_kit of this container's kit: (expiry line, problem or ''); the dates kept in KIT_DATES."""
    return kit_expiry.check_kit(kit, now, cache, refresh)


# --- reach: a site that cannot connect says where it dials and why ---------------------------------------------

def tls_context() -> ssl.SSLContext:
    startup = os.path.join(KIT, "startup")
    ctx = ssl.create_default_context(cafile=os.path.join(startup, "rootCA.pem"))
    ctx.load_cert_chain(os.path.join(startup, "client.crt"), os.path.join(startup, "client.key"))
    return ctx


def reach_problem(host: str, port: int, context=None) -> tuple:
    """(address the name resolves to, why the server cannot be reached there); reason '' when a TCP connection and
    the kit's mutual-TLS handshake with the server's certificate both succeed."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        return "", f"the name does not resolve ({e.strerror})"
    try:
        sock = socket.create_connection((address, port), CONNECT_TIMEOUT_S)
    except socket.timeout:
        return address, f"no answer within {CONNECT_TIMEOUT_S:g} s (a firewall dropping the packets, or no such host)"
    except OSError as e:
        return address, e.strerror or str(e)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        with (context or tls_context()).wrap_socket(sock, server_hostname=host):
            return address, ""
    except ssl.SSLCertVerificationError as e:
        if e.verify_code in (9, 10):  # X509_V_ERR_CERT_NOT_YET_VALID / _HAS_EXPIRED: the right server, out of date
            return address, (f"the server's certificate chain is out of date by this container's clock "
                             f"({e.verify_message}); fix: if it expired, renew the server's kit on the provisioning "
                             "host (scripts/renew_kit.py SERVER, its name in project.yml) and restart the server; if "
                             f"it is not valid yet, {kit_expiry.NTP_FIX}")
        return address, (f"something answers there but not this federation's server ({e.verify_message}: its "
                         "certificate is not signed by this kit's root CA for that name)")
    except (ssl.SSLError, OSError) as e:
        return address, f"something answers there but the TLS handshake with it failed ({e})"
    finally:
        sock.close()


def ipv6_hint(address: str, reason: str) -> str:
    """Why an IPv6 server address is unreachable from a container on an IPv4-only network ('' otherwise): the
    site's compose network has IPv6 only with FL_IPV6=true (docker/site-host.yaml)."""
    if ":" not in address or "unreachable" not in reason.lower():
        return ""
    return ("; the server's address is IPv6 and this container's network has no IPv6 route: set FL_IPV6=true in .env "
            "(Docker Engine 27+ picks the subnet; older engines need \"ipv6\": true and \"fixed-cidr-v6\" in "
            "daemon.json), then docker compose down and up -d (the network is made anew)")


def reach_message(host: str, port: int, address: str, reason: str) -> str:
    at = f" at {address}" if address else ""
    configured = os.environ.get("FL_SERVER_ADDRESS")
    if configured is None:  # the server's own compose project: the name is the server container's alias
        fix = "the server container of this compose project must be running (docker compose ps server; " \
              "docker compose logs server)"
    else:
        loopback = configured.startswith("127.") or configured in ("::1", "localhost")
        fix = (f"FL_SERVER_ADDRESS must be the server host's IP address, reachable from this host on port {port}, "
               f"or host-gateway when the server runs on this very host (it is {configured!r} in .env"
               + ("; a loopback address is this container itself" if loopback else "")
               + "; then docker compose up -d)")
    return f"cannot reach {host}:{port}{at}: {reason}{ipv6_hint(address, reason)}; {fix}"


def watch(first_s: float = WATCH_FIRST_S, every_s: float = WATCH_EVERY_S):
    """Runs beside the site (entrypoint): while it is not connected, print where it dials and why it fails."""
    host, port = server_target("site")
    time.sleep(first_s)
    failing = False
    while True:
        if connected_to(port):
            if failing:
                print(f"fl-kit-check: connected to {host}:{port}", file=sys.stderr, flush=True)
            failing = False
            time.sleep(every_s / 4)
            continue
        address, reason = reach_problem(host, port)
        if reason:
            print(f"fl-kit-check: {reach_message(host, port, address, reason)} (the site keeps retrying)",
                  file=sys.stderr, flush=True)
            failing = True
            time.sleep(every_s)
        else:
            time.sleep(every_s / 4)


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
    if argv[:1] == ["validity"] and len(argv) == 2:
        line, problem = kit_validity()
        print(f"fl-kit-check: {line}", flush=True)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["healthy"]:  # an expired (or not yet valid) kit is unhealthy, whatever its port says
        line, problem = kit_validity(refresh=False)  # the health log shows the kit's expiry (docker inspect)
        if problem:
            print(problem)
            return 1
    if argv[:1] == ["healthy"] and argv[1:] == ["server"]:
        _, port = server_target("server")
        socket.create_connection(("127.0.0.1", port), 3).close()
        print(line)
        return 0
    if argv[:1] == ["healthy"] and argv[1:] == ["site"]:
        host, port = server_target("site")
        if connected_to(port):
            if registered_since_start():
                print(line)
                return 0
            print(f"connected to {host}:{port}, not registered yet")
            return 1
        address, reason = reach_problem(host, port)
        print(reach_message(host, port, address, reason) if reason else
              f"{host}:{port} answers (at {address}) but the site is not connected yet")
        return 1
    if argv[:1] == ["access"] and len(argv) == 2:
        problem = access_problem(argv[1])
        if problem:
            print(problem, file=sys.stderr)
            return 2
        return 0
    if argv[:2] == ["watch", "site"]:
        watch()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
