#!/usr/bin/env python3
"""Whether a participant container has a usable startup kit at /kit (the entrypoint, at every start): missing, or
there but closed to this container's user, and the fix for each.

    fl-kit-present [KIT]     exit 0 when KIT's start file can be read (under a user namespace: every file of
                             startup/); else one line on stderr, exit 2

A kit that is there but closed is never reported as missing. Three hosts close it:
  * a hardened umask (077) or a kit unpacked by another user: the mode bits and owner keep this uid out;
  * SELinux enforcing: the mode bits let this uid in but the kernel refuses (the host folder lacks the
    container_file_t label): relabel it (chcon -Rt container_file_t, or the volume option :z);
  * rootless Docker or Podman (a user namespace, /proc/self/uid_map): this uid is another uid on the host, the one
    a chown on the host must name.
Standard library only: it runs in the image, beside fl-kit-check.
"""

import importlib.util
import os
import stat
import sys
from importlib.machinery import SourceFileLoader

KIT = os.environ.get("FL_KIT", "/kit")
START_FILES = ("sub_start.sh", "fed_admin.json")  # a server or site kit; an admin kit


def _load_kit_check():
    """fl-kit-check beside this script (the image's /usr/local/bin; docker/kit_check.py here): its mode rule and its
    reading of the mount table, shared."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = next(p for p in (os.path.join(here, "fl-kit-check"), os.path.join(here, "kit_check.py"))
                if os.path.isfile(p))
    loader = SourceFileLoader("kit_check", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("kit_check", loader))
    loader.exec_module(module)
    return module


kit_check = _load_kit_check()


def host_id(container_id: int, id_map: str):
    """The host uid (or gid) of a container uid under a user namespace map (/proc/self/uid_map rows: inside,
    outside, count; see user_namespaces(7)); None when unmapped."""
    for row in id_map.splitlines():
        fields = row.split()
        if len(fields) == 3:
            inside, outside, count = map(int, fields)
            if inside <= container_id < inside + count:
                return outside + container_id - inside
    return None


def read_map(name: str) -> str:
    try:
        with open(f"/proc/self/{name}") as f:
            return f.read()
    except OSError:
        return ""


def identity_map(id_map: str) -> bool:
    """No user namespace: the whole id range maps onto itself (or the map cannot be read)."""
    rows = [row.split() for row in id_map.splitlines() if row.strip()]
    return not rows or all(r[0] == r[1] for r in rows)


def closed_message(path: str, st, what: str, uid: int, gids: set, host: str, uid_map: str = "",
                   gid_map: str = "") -> str:
    """One line: ``path`` (stat ``st``) is there but this uid cannot ``what`` ('read' or 'enter') it; why, and the
    fix on the host folder ``host``."""
    bits = 1 if what == "enter" else 4
    mode = stat.S_IMODE(st.st_mode)
    head = f"error: the startup kit is there but this container (uid {uid}) cannot {what} {path}"
    if kit_check.allowed(st, uid, gids, bits):
        return (f"{head}: its mode {mode:04o} allows it, so a security label refuses it (SELinux enforcing on the "
                f"host: the kit folder lacks the container_file_t label); fix: on the host, chcon -Rt "
                f"container_file_t {host} (or add :z to the kit's volume, e.g. ...:/kit:ro,z), then docker compose "
                "up -d")
    in_namespace = not identity_map(uid_map)
    owner = st.st_uid
    if in_namespace:
        h_uid, h_gid = host_id(uid, uid_map), host_id(next(iter(gids), uid), gid_map or uid_map)
        seen = "your own uid (root here)" if owner == 0 else (
            "a host uid outside this container's map" if host_id(owner, uid_map) is None else f"uid {owner}")
        return (f"{head}: it belongs to {seen} (mode {mode:04o}) and Docker runs rootless (a user namespace), so "
                f"uid {uid} here is uid {h_uid} on the host; fix: on the host, sudo chown -R {h_uid}:{h_gid} {host} "
                f"(or without sudo: docker run --rm -u 0 -v {host}:/k --entrypoint chown "
                f"{os.environ.get('FL_IMAGE', 'IMAGE')} -R {uid}:{uid} /k)")
    as_owner = "" if owner == 0 else (f", or run the containers as uid {owner} (FL_UID={owner} in .env, then docker "
                                      "compose build)")  # never as root: the image's user is unprivileged
    return (f"{head}: it belongs to uid {owner} (mode {mode:04o}; a umask like 077 or another user's unpacking made "
            f"it private); fix: on the host, sudo chown -R {uid}:{uid} {host} (the keys stay private to that "
            f"owner){as_owner}")


def kit_problem(kit: str = KIT, uid: int = None, gids: set = None, maps: dict = None) -> str:
    """'' when the kit's start file can be read (under a user namespace: every file of startup/); else one line: no
    kit (nothing mounted, an empty folder, no start file), or a kit this uid cannot read, named by closed_message."""
    uid = os.getuid() if uid is None else uid
    gids = set(os.getgroups()) | {os.getgid()} if gids is None else gids
    host = kit_check.mount_source(kit) or "the kit folder"
    maps = maps or dict(uid_map=read_map("uid_map"), gid_map=read_map("gid_map"))
    missing = (f"error: no startup kit at {kit} ({{}}): provision first (python3 scripts/provision.py) and mount "
               f"the participant's kit folder there")
    parent, parent_st = None, None
    for path in (kit, os.path.join(kit, "startup")):
        try:
            st = os.stat(path)
        except PermissionError:
            parent = parent or os.path.dirname(path)
            return closed_message(parent, parent_st or os.stat(parent), "enter", uid, gids, host, **maps)
        except FileNotFoundError:
            return missing.format(f"{path} does not exist")
        try:
            names = os.listdir(path)
        except PermissionError:
            return closed_message(path, st, "read", uid, gids, host, **maps)
        if path == kit and not names:
            return missing.format(f"the folder mounted there, {host}, is empty")
        parent, parent_st = path, st
    start = next((n for n in START_FILES if n in names), None)
    if start is None:
        return missing.format(f"{parent} holds neither {' nor '.join(START_FILES)}")
    # The start file; under a user namespace every file of startup/ (the keys too), whose fix must name the host uid
    # (fl-kit-check access names the rest, with the container's uid).
    userns = not identity_map(maps["uid_map"])
    for name in [start] + (sorted(set(names) - {start}) if userns else []):
        path = os.path.join(parent, name)
        try:
            with open(path, "rb"):
                pass
        except PermissionError:
            return closed_message(path, os.stat(path), "read", uid, gids, host, **maps)
        except (IsADirectoryError, FileNotFoundError):
            pass
    return ""


def main(argv) -> int:
    problem = kit_problem(argv[0] if argv else KIT)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
