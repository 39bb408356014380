#!/usr/bin/env python3
"""Provision the federation: project.yml -> signed startup kits in workspace/kits/<participant>/.

    python scripts/provision.py            # first time
    python scripts/provision.py --force    # replace existing kits (restart the services afterwards)

Wraps `nvflare provision` and then:
  * keeps NVFlare's provisioning state (the root CA) in workspace/provision/, so later runs sign with the same CA;
  * copies the newest kits to stable paths, workspace/kits/<name>/, which compose mounts read-only;
  * points the server's job store and snapshots at --storage-root (a volume in the containers), the
    documented site-local override (local/resources.json), not an edit of the signed startup files;
  * regenerates compose.participants.yaml / compose.cpu.yaml so compose follows project.yml's participants.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The uid the image's `fl` user runs as (docker/Dockerfile FL_UID); kits must be readable by it.
DEFAULT_SERVICE_UID = 10001


class ProjectError(ValueError):
    pass


def load_project(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise ProjectError(f"{path} not found")
    try:
        with open(path) as f:
            project = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ProjectError(f"{path} is not valid YAML: {e}".splitlines()[0]) from e
    if not isinstance(project, dict) or not isinstance(project.get("participants"), list):
        raise ProjectError(f"{path} has no 'participants' list")
    if not project.get("name"):
        raise ProjectError(f"{path} has no project 'name'")
    return project


def connection_builder(project: dict) -> dict:
    """The builder entry that gives the kits their connection settings (StaticFileBuilder), or None."""
    return next((b for b in project.get("builders") or [] if str(b.get("path", "")).endswith(".StaticFileBuilder")),
                None)


def participants(project: dict) -> dict:
    """{'server': name, 'sites': [...], 'admins': [...]} with the names checked for use as container names."""
    by_type = {"server": [], "client": [], "admin": []}
    for p in project["participants"]:
        if not isinstance(p, dict) or "name" not in p or "type" not in p:
            raise ProjectError(f"participant entry {p!r} needs a 'name' and a 'type'")
        by_type.setdefault(p["type"], []).append(str(p["name"]))
    if len(by_type["server"]) != 1:
        raise ProjectError(f"the project needs exactly one server, found {len(by_type['server'])}")
    if not by_type["client"]:
        raise ProjectError("the project has no sites (participants of type: client)")
    for site in by_type["client"]:
        if not DNS_LABEL.match(site):
            raise ProjectError(
                f"site name {site!r} is not a valid DNS label (lower-case letters, digits, '-'; at most 63): "
                "it becomes a container and host name"
            )
    names = by_type["client"] + by_type["server"] + by_type["admin"]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ProjectError(f"duplicate participant names: {sorted(dup)}")
    return {"server": by_type["server"][0], "sites": by_type["client"], "admins": by_type["admin"]}


def newest_prod_dir(provision_dir: str, project_name: str) -> str:
    base = os.path.join(provision_dir, project_name)
    prods = sorted(
        (d for d in os.listdir(base) if re.fullmatch(r"prod_\d+", d)), key=lambda d: int(d.split("_")[1])
    )
    if not prods:
        raise RuntimeError(f"nvflare provision wrote no prod_NN folder under {base}")
    return os.path.join(base, prods[-1])


def set_server_storage(server_kit: str, storage_root: str):
    """Job store and snapshots under storage_root (a volume), not NVFlare's default /tmp/nvflare."""
    from nvflare.lighter.utils import update_storage_locations

    update_storage_locations(local_dir=os.path.join(server_kit, "local"), workspace=storage_root)


def chown_tree(path: str, uid: int):
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, uid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def run_nvflare_provision(project_path: str, project_name: str, workspace: str) -> str:
    """`nvflare provision` into workspace/provision/ (its state/ keeps the root CA across runs); the new prod dir."""
    provision_dir = os.path.join(workspace, "provision")
    os.makedirs(provision_dir, exist_ok=True)
    # --force only skips the "workspace exists" prompt: state/ (the root CA) is reused, not replaced.
    cmd = [sys.executable, "-m", "nvflare.cli", "provision", "--force", "-p", os.path.abspath(project_path),
           "-w", provision_dir]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        detail = (run.stdout + run.stderr).strip().splitlines()
        raise ProjectError(f"nvflare provision failed: {' | '.join(detail[-3:])}")
    return newest_prod_dir(provision_dir, project_name)


def provision(project_path: str, workspace: str, storage_root: str, force: bool, service_uid: int) -> dict:
    project = load_project(project_path)
    who = participants(project)
    kits_dir = os.path.join(workspace, "kits")
    if os.path.isdir(kits_dir) and os.listdir(kits_dir) and not force:
        raise ProjectError(
            f"kits already exist in {kits_dir} and may be in use by running containers; "
            "re-run with --force to replace them (then restart the services: docker compose up -d --force-recreate)"
        )
    prod = run_nvflare_provision(project_path, project["name"], workspace)
    staging = kits_dir + ".new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(prod, staging, symlinks=True)
    set_server_storage(os.path.join(staging, who["server"]), storage_root)
    if os.geteuid() == 0 and service_uid:
        # Root provisioned (CI, a root shell): hand the kits to the containers' non-root user.
        chown_tree(staging, service_uid)
    shutil.rmtree(kits_dir, ignore_errors=True)
    os.replace(staging, kits_dir)
    return {"kits": {n: os.path.join(kits_dir, n) for n in [who["server"], *who["sites"], *who["admins"]]}, **who}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"), help="NVFlare project file")
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"), help="where kits and CA state go")
    p.add_argument("--storage-root", default="/workspace",
                   help="server job store / snapshot root as the server sees it (container path)")
    p.add_argument("--force", action="store_true", help="replace existing kits")
    p.add_argument("--service-uid", type=int, default=DEFAULT_SERVICE_UID,
                   help="when run as root, chown kits to this uid (the image's user); 0 = leave as is")
    p.add_argument("--compose-dir", default=ROOT,
                   help="regenerate compose.participants.yaml / compose.cpu.yaml here ('' = skip)")
    args = p.parse_args(argv)
    try:
        result = provision(args.project, args.workspace, args.storage_root, args.force, args.service_uid)
    except ProjectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.compose_dir:
        import compose_participants

        compose_files = compose_participants.write(args.compose_dir, load_project(args.project), result)
    for name, path in result["kits"].items():
        print(f"{name:>24}: {os.path.relpath(path)}")
    if args.compose_dir:
        print(f"{'compose services':>24}: {', '.join(os.path.relpath(f) for f in compose_files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
