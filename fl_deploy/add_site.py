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

import yaml

from fl_deploy import IMAGE_UID, ROOT, compose_files
from fl_deploy.host import container_uid
from fl_deploy.project import DNS_LABEL, Project, ProjectError, check_deployable, load_project, parse_project
from fl_deploy.provision import chown_tree, run_nvflare_provision, state_dir


def with_site(project: Project, text: str, site: str, org: str) -> tuple:
    """(project.yml's text with the site inserted after the last client entry, keeping its comments and layout;
    the Project that text describes)."""
    if site in project.participants or site == project.server:
        raise ProjectError(f"{site!r} is already a participant of {project.path}")
    if not DNS_LABEL.match(site):
        raise ProjectError(f"site name {site!r} is not a valid DNS label (lower-case letters, digits, '-')")
    lines = text.splitlines(keepends=True)
    last = project.sites[-1]
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {last}")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = start + 1
    while end < len(lines) and (lines[end].startswith(indent + "  ") or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    block = [f"{indent}- name: {site}\n", f"{indent}  type: client\n", f"{indent}  org: {org}\n"]
    new_text = "".join(lines[:end] + block + lines[end:])
    return new_text, parse_project(yaml.safe_load(new_text), project.path)


def check_same_scheme(project: Project, kits_dir: str):
    """A new kit must speak the running server's scheme: kits provisioned before project.yml's scheme changed
    (e.g. http, before this project chose tcp) would refuse a newcomer's connection."""
    try:
        with open(os.path.join(kits_dir, project.server_kit, "startup", "fed_server.json")) as f:
            running = json.load(f)["servers"][0]["service"]["scheme"]
    except (OSError, ValueError, KeyError, IndexError):
        return  # no server kit here (a site-only host): nothing to compare
    if running != project.scheme:
        raise ProjectError(
            f"the server's kit ({kits_dir}/{project.server_kit}) was provisioned with scheme {running!r} but "
            f"project.yml now says {project.scheme!r}: a new site would not reach it. Set `scheme: {running}` in "
            "project.yml (StaticFileBuilder args), or re-provision everyone (scripts/provision.py --force) and restart")


def running_root_ca(project: Project, kits_dir: str) -> tuple:
    """(path, bytes) of the root CA the running federation trusts: the server's kit's, else (a host without the
    server's kit) any installed kit's."""
    names = [project.server_kit, *project.sites, *(a.name for a in project.admins)]
    for name in names:
        path = os.path.join(kits_dir, name, "startup", "rootCA.pem")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return path, f.read()
    raise ProjectError(f"no installed kit in {kits_dir} holds a rootCA.pem: provision the federation first "
                       "(scripts/provision.py)")


def require_state(project: Project, workspace: str, running_ca: str, what: str, command: str) -> str:
    """NVFlare's provisioning state folder of ``workspace`` (the root CA's key, state/cert.json), or ProjectError
    when it is missing: ``what`` ("a new site") could then not be signed by the running kits' root CA."""
    state = state_dir(workspace, project)
    if not os.path.isfile(os.path.join(state, "cert.json")):
        # Without it, nvflare provision mints a new root CA: a kit no running participant would trust.
        raise ProjectError(
            f"NVFlare's provisioning state {state}/cert.json (the root CA's private key) is missing, so {what} "
            f"could not be signed by the root CA the running kits trust ({running_ca}); run {command} where the "
            f"federation was provisioned, or copy that machine's {os.path.relpath(state, workspace)}/ into "
            f"{os.path.join(workspace, 'provision', project.name)}/ (keep it as secret as the kits' keys)")
    return state


def add_site(project_path: str, workspace: str, site: str, org: str, service_uid: int,
             for_containers: bool = False) -> tuple:
    """Add the site to project.yml and install its kit; (its kit folder, the new Project). The new kit must trust
    the root CA the running kits trust: that needs NVFlare's provisioning state (the root CA's key) of this
    workspace, and it is checked on the kit written, not assumed. On any failure project.yml is left as it was
    and no kit is installed. ``for_containers``: also refuse what the compose deployment could not run
    (project.check_deployable), as scripts/add_site.py does when it regenerates the compose files."""
    project = load_project(project_path)
    kits_dir = os.path.join(workspace, "kits")
    if not os.path.isdir(kits_dir):
        raise ProjectError(f"no kits in {kits_dir}: provision the federation first (scripts/provision.py)")
    check_same_scheme(project, kits_dir)
    running_ca, running_pem = running_root_ca(project, kits_dir)
    state = require_state(project, workspace, running_ca, "a new site", "add_site.py")
    with open(project_path) as f:
        backup = f.read()
    new_text, new_project = with_site(project, backup, site, org)
    if for_containers:
        check_deployable(new_project)
    dest = os.path.join(kits_dir, site)
    if os.path.lexists(dest):
        raise ProjectError(f"{dest} already exists although {site!r} is not in {project_path}: move it away first")
    with open(project_path, "w") as f:
        f.write(new_text)
    try:
        prod = run_nvflare_provision(new_project, workspace)
        with open(os.path.join(prod, site, "startup", "rootCA.pem"), "rb") as f:
            if f.read() != running_pem:
                raise ProjectError(
                    f"nvflare provision signed {site}'s kit with another root CA than the running kits' "
                    f"({running_ca}): {state} does not belong to this federation; nothing was installed. Restore "
                    "the provisioning state of the machine that provisioned the federation")
        shutil.copytree(os.path.join(prod, site), dest, symlinks=True)
        if os.geteuid() == 0 and service_uid:
            chown_tree(dest, service_uid)
    except BaseException:
        with open(project_path, "w") as f:  # leave project.yml as it was, and no kit behind
            f.write(backup)
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest, new_project


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="add_site.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", help="new site name (a DNS label, e.g. site-3)")
    p.add_argument("--org", default="new_site", help="its organisation (letters, digits, _)")
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"))
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"))
    p.add_argument("--service-uid", type=int, default=container_uid(),
                   help="when run as root, chown the kit to this uid: the containers' (FL_UID of .env, else the "
                        f"image's {IMAGE_UID}; default {container_uid()}); 0 = leave as is")
    p.add_argument("--compose-dir", default=ROOT, help="regenerate the compose files here ('' = skip)")
    p.add_argument("--start", action="store_true", help="docker compose up -d the new site and wait for it")
    args = p.parse_args(argv)
    if args.start and not shutil.which("docker"):  # e.g. run through scripts/in_image.sh: the image has no docker CLI
        p.error("--start needs the docker CLI, which this environment lacks (inside the image through "
                "scripts/in_image.sh); nothing was changed. Add the site without --start, then on the host: "
                f"docker compose up -d {args.site}")
    t0 = time.monotonic()
    try:
        kit, project = add_site(args.project, args.workspace, args.site, args.org, args.service_uid,
                                for_containers=bool(args.compose_dir))
    except ProjectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.site}: kit {os.path.relpath(kit)} (its rootCA.pem checked: the running kits' root CA; project.yml "
          f"updated) in {time.monotonic() - t0:.1f}s")
    if args.compose_dir:
        compose_files.write(args.compose_dir, project)
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
