#!/usr/bin/env python3
"""Add a site to a running federation, signed by the same root CA, without touching the other participants.

    python3 scripts/add_site.py site-3 --org hospital_c          # then: docker compose up -d site-3
    python3 scripts/add_site.py site-3 --org hospital_c --start  # ... and start it now

Adds the site to project.yml, re-runs `nvflare provision` (its state/ keeps the root CA, so the server and the
running sites trust the newcomer with no restart), installs only the new kit in workspace/kits/<site>/, and
regenerates the compose files. The next job generated from project.yml includes the site. This is NVFlare's
`provision --add-client` flow, except that the site is written into project.yml, which the job and compose read.
Run it where nvflare is installed: .venv/bin/python, or in the image (scripts/in_image.sh scripts/add_site.py ...).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import provision

ROOT = provision.ROOT


def add_to_project(project_path: str, site: str, org: str):
    """Insert the site after the last client entry, keeping the file's comments and layout."""
    project = provision.load_project(project_path)
    who = provision.participants(project)
    if site in [who["server"], *who["sites"], *who["admins"]]:
        raise provision.ProjectError(f"{site!r} is already a participant of {project_path}")
    if not provision.DNS_LABEL.match(site):
        raise provision.ProjectError(f"site name {site!r} is not a valid DNS label (lower-case letters, digits, '-')")
    with open(project_path) as f:
        lines = f.read().splitlines(keepends=True)
    last = who["sites"][-1]
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {last}")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = start + 1
    while end < len(lines) and (lines[end].startswith(indent + "  ") or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    block = [f"{indent}- name: {site}\n", f"{indent}  type: client\n", f"{indent}  org: {org}\n"]
    with open(project_path, "w") as f:
        f.writelines(lines[:end] + block + lines[end:])
    provision.participants(provision.load_project(project_path))  # still valid


def project_scheme(project: dict) -> str:
    """The connection scheme project.yml gives the kits (StaticFileBuilder's scheme; NVFlare's default is http)."""
    builder = provision.connection_builder(project) or {}
    return (builder.get("args") or {}).get("scheme", "http")


def check_same_scheme(project: dict, kits_dir: str):
    """A new kit must speak the running server's scheme: kits provisioned before project.yml's scheme changed
    (e.g. http, before this project chose tcp) would refuse a newcomer's connection."""
    server = provision.participants(project)["server"]
    try:
        with open(os.path.join(kits_dir, server, "startup", "fed_server.json")) as f:
            running = json.load(f)["servers"][0]["service"]["scheme"]
    except (OSError, ValueError, KeyError, IndexError):
        return  # no server kit here (a site-only host): nothing to compare
    wanted = project_scheme(project)
    if running != wanted:
        raise provision.ProjectError(
            f"the server's kit ({kits_dir}/{server}) was provisioned with scheme {running!r} but project.yml now "
            f"says {wanted!r}: a new site would not reach it. Set `scheme: {running}` in project.yml "
            f"(StaticFileBuilder args), or re-provision everyone (scripts/provision.py --force) and restart")


def add_site(project_path: str, workspace: str, site: str, org: str, service_uid: int) -> str:
    kits_dir = os.path.join(workspace, "kits")
    if not os.path.isdir(kits_dir):
        raise provision.ProjectError(f"no kits in {kits_dir}: provision the federation first (scripts/provision.py)")
    check_same_scheme(provision.load_project(project_path), kits_dir)
    backup = open(project_path).read()
    add_to_project(project_path, site, org)
    try:
        project = provision.load_project(project_path)
        prod = provision.run_nvflare_provision(project_path, project["name"], workspace)
    except Exception:
        with open(project_path, "w") as f:  # leave project.yml as it was
            f.write(backup)
        raise
    dest = os.path.join(kits_dir, site)
    shutil.copytree(os.path.join(prod, site), dest, symlinks=True)
    if os.geteuid() == 0 and service_uid:
        provision.chown_tree(dest, service_uid)
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", help="new site name (a DNS label, e.g. site-3)")
    p.add_argument("--org", default="new_site", help="its organisation (letters, digits, _)")
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"))
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"))
    p.add_argument("--service-uid", type=int, default=provision.DEFAULT_SERVICE_UID)
    p.add_argument("--compose-dir", default=ROOT, help="regenerate the compose files here ('' = skip)")
    p.add_argument("--start", action="store_true", help="docker compose up -d the new site and wait for it")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        kit = add_site(args.project, args.workspace, args.site, args.org, args.service_uid)
    except provision.ProjectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.site}: kit {os.path.relpath(kit)} (same root CA; project.yml updated) in {time.monotonic() - t0:.1f}s")
    if args.compose_dir:
        import compose_participants

        project = provision.load_project(args.project)
        compose_participants.write(args.compose_dir, project, provision.participants(project))
    if args.start:
        t1 = time.monotonic()
        run = subprocess.run(["docker", "compose", "up", "-d", "--no-build", "--wait", args.site], cwd=ROOT)
        if run.returncode != 0:
            print(f"error: {args.site} did not become healthy: docker compose logs {args.site}", file=sys.stderr)
            return 1
        print(f"{args.site}: registered with the server {time.monotonic() - t1:.1f}s after start")
    else:
        print(f"start it: docker compose up -d {args.site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
