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

from fl_deploy import IMAGE_UID, ROOT
from fl_deploy.host import container_uid
from fl_deploy.project import Project, ProjectError, check_deployable, load_project


def newest_prod_dir(provision_dir: str, project_name: str) -> str:
    base = os.path.join(provision_dir, project_name)
    prods = sorted(
        (d for d in os.listdir(base) if re.fullmatch(r"prod_\d+", d)), key=lambda d: int(d.split("_")[1])
    )
    if not prods:
        raise RuntimeError(f"nvflare provision wrote no prod_NN folder under {base}")
    return os.path.join(base, prods[-1])


def state_dir(workspace: str, project: Project) -> str:
    """NVFlare's provisioning state (root CA and its key) for this project, kept across runs."""
    return os.path.join(workspace, "provision", project.name, "state")


def set_server_storage(server_kit: str, storage_root: str):
    """Job store and snapshots under storage_root (a volume), not NVFlare's default /tmp/nvflare."""
    from nvflare.lighter.utils import update_storage_locations

    update_storage_locations(local_dir=os.path.join(server_kit, "local"), workspace=storage_root)


def chown_tree(path: str, uid: int):
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, uid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def run_nvflare_provision(project: Project, workspace: str) -> str:
    """`nvflare provision` into workspace/provision/ (its state/ keeps the root CA across runs); the new prod dir."""
    provision_dir = os.path.join(workspace, "provision")
    os.makedirs(provision_dir, exist_ok=True)
    # --force only skips the "workspace exists" prompt: state/ (the root CA) is reused, not replaced.
    cmd = [sys.executable, "-m", "nvflare.cli", "provision", "--force", "-p", os.path.abspath(project.path),
           "-w", provision_dir]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        detail = (run.stdout + run.stderr).strip().splitlines()
        raise ProjectError(f"nvflare provision failed: {' | '.join(detail[-3:])}")
    return newest_prod_dir(provision_dir, project.name)


def provision(project: Project, workspace: str, storage_root: str, force: bool, service_uid: int) -> dict:
    """Kits for every participant of ``project`` in <workspace>/kits; {participant: kit folder}."""
    kits_dir = os.path.join(workspace, "kits")
    if os.path.isdir(kits_dir) and os.listdir(kits_dir) and not force:
        raise ProjectError(
            f"kits already exist in {kits_dir} and may be in use by running containers; "
            "re-run with --force to replace them (then restart the services: docker compose up -d --force-recreate)"
        )
    prod = run_nvflare_provision(project, workspace)
    staging = kits_dir + ".new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(prod, staging, symlinks=True)
    set_server_storage(os.path.join(staging, project.server_kit), storage_root)
    if os.geteuid() == 0 and service_uid:
        # Root provisioned (CI, a root shell): hand the kits to the containers' non-root user.
        chown_tree(staging, service_uid)
    shutil.rmtree(kits_dir, ignore_errors=True)
    os.replace(staging, kits_dir)
    return {name: os.path.join(kits_dir, name) for name in project.participants}


def main(argv=None) -> int:
    from fl_deploy import compose_files

    p = argparse.ArgumentParser(prog="provision.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"), help="NVFlare project file")
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"), help="where kits and CA state go")
    p.add_argument("--storage-root", default="/workspace",
                   help="server job store / snapshot root as the server sees it (container path)")
    p.add_argument("--force", action="store_true", help="replace existing kits")
    p.add_argument("--service-uid", type=int, default=container_uid(),
                   help="when run as root, chown the kit to this uid: the containers' (FL_UID of .env, else the "
                        f"image's {IMAGE_UID}; default {container_uid()}); 0 = leave as is")
    p.add_argument("--compose-dir", default=ROOT,
                   help="regenerate compose.participants.yaml / compose.cpu.yaml here ('' = skip)")
    args = p.parse_args(argv)
    try:
        project = load_project(args.project)
        if args.compose_dir:  # kits for the containers: refuse, before anything is written, what they could not run
            check_deployable(project)
        kits = provision(project, args.workspace, args.storage_root, args.force, args.service_uid)
    except ProjectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in kits.items():
        print(f"{name:>24}: {os.path.relpath(path)}")
    if args.compose_dir:
        written = compose_files.write(args.compose_dir, project)
        print(f"{'compose services':>24}: {', '.join(os.path.relpath(f) for f in written)}")
    return 0
