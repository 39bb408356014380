"""Renew one participant's certificate under the same root CA: a freshly signed kit for that participant only.

    scripts/in_image.sh scripts/renew_kit.py site-1      # then: docker compose up -d --force-recreate site-1
    scripts/in_image.sh scripts/renew_kit.py fl-server   # the server's kit; then recreate `server` between jobs

NVFlare's provisioning state (workspace/provision/<project>/state/cert.json) keeps the root CA and every
participant's certificate, and `nvflare provision` reuses what it holds. This command drops the one participant's
entry from that state and re-runs provisioning (as add_site.py does: same root CA), so NVFlare signs a new key and
certificate for it alone. The new kit replaces workspace/kits/<name>/ (its local/ folder, the site's own settings,
is carried over); the old kit is moved to workspace/kits-replaced/<name>-<UTC time>/, never edited or deleted: a
running container keeps the kit folder it mounted until it is restarted, so a running job is not touched. No other
kit changes: the others trust the same root CA, so none of them restarts. Roll the new kit by restarting that one
container (on another host: export its bundle again, scripts/export_bundles.py --sites NAME --force, move the host's kit/ aside, put the new
one in its place, and recreate the container).

A certificate never outlives its root CA (NVFlare caps it there): the renewed certificate ends at the root's
expiry when that is within NVFlare's 360 days. A new root CA means every kit re-provisioned (docs/reliability.md).
Run it where nvflare is installed: .venv/bin/python, or in the image (scripts/in_image.sh scripts/renew_kit.py ...).
"""

import argparse
import datetime
import json
import os
import shutil
import sys

from fl_deploy import IMAGE_UID, ROOT, kit_expiry
from fl_deploy.host import container_uid
from fl_deploy.add_site import require_state, running_root_ca
from fl_deploy.project import ProjectError, load_project
from fl_deploy.provision import chown_tree, run_nvflare_provision


def service_of(project, name: str) -> str:
    """The compose service that mounts ``name``'s kit (compose_files: server, the site's name, admin, admin-2 ...)."""
    if name == project.server_kit:
        return "server"
    return next((a.service for a in project.admins if a.name == name), name)


def renew_kit(project_path: str, workspace: str, name: str, service_uid: int, now: datetime.datetime = None) -> tuple:
    """Install a freshly signed kit for participant ``name``; (its kit folder, where the old kit went, the new
    certificate, the root CA: kit_expiry.Certificate). On any failure the kits and the provisioning state are left as they were."""
    project = load_project(project_path)
    names = [project.server_kit, *project.sites, *(a.name for a in project.admins)]
    if name not in names:
        raise ProjectError(f"{name!r} is not a participant of {project_path} ({', '.join(names)})")
    kits_dir = os.path.join(workspace, "kits")
    kit = os.path.join(kits_dir, name)
    if not os.path.isdir(os.path.join(kit, "startup")):
        raise ProjectError(f"no kit at {kit} to renew: provision the federation first (scripts/provision.py), or "
                           "add the site (scripts/add_site.py)")
    running_ca, running_pem = running_root_ca(project, kits_dir)
    state = require_state(project, workspace, running_ca, f"{name}'s new certificate", "renew_kit.py")
    now = now or datetime.datetime.now(kit_expiry.UTC)
    root = kit_expiry.read_certificate(os.path.join(kit, "startup", "rootCA.pem"), "root CA")
    if root.not_after <= now:
        raise ProjectError(kit_expiry.validity_problem(name, [root], now))
    old = kit_expiry.read_certificate(kit_expiry.participant_cert_path(kit))
    state_file = os.path.join(state, "cert.json")
    with open(state_file) as f:
        backup = f.read()
    content = json.loads(backup)
    content.pop(name, None)  # without its entry, nvflare provision signs a new key and certificate for it
    with open(state_file, "w") as f:
        json.dump(content, f)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    replaced = os.path.join(workspace, "kits-replaced", f"{name}-{stamp}")
    try:
        prod = run_nvflare_provision(project, workspace)
        fresh = os.path.join(prod, name)
        with open(os.path.join(fresh, "startup", "rootCA.pem"), "rb") as f:
            if f.read() != running_pem:
                raise ProjectError(f"nvflare provision signed {name}'s kit with another root CA than the running "
                                   f"kits' ({running_ca}): {state} does not belong to this federation; nothing was "
                                   "installed")
        new_path = kit_expiry.participant_cert_path(fresh)
        new = kit_expiry.read_certificate(new_path)
        # The same bytes, not a later notBefore: a renewal within the second of the provisioning has an equal one.
        if _read(new_path) == _read(kit_expiry.participant_cert_path(kit)):
            raise ProjectError(f"nvflare provision kept {name}'s old certificate (valid from "
                               f"{kit_expiry.when(old.not_before)}): nothing was installed; report this")
        shutil.rmtree(os.path.join(fresh, "local"), ignore_errors=True)
        shutil.copytree(os.path.join(kit, "local"), os.path.join(fresh, "local"), symlinks=True)
        staging = kit + ".renewed"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(fresh, staging, symlinks=True)
        if os.geteuid() == 0 and service_uid:
            chown_tree(staging, service_uid)
    except BaseException:
        with open(state_file, "w") as f:  # the state as it was: the old certificate stays the recorded one
            f.write(backup)
        raise
    os.makedirs(os.path.dirname(replaced), exist_ok=True)
    os.rename(kit, replaced)  # a container that mounted the kit keeps this folder until it restarts
    os.rename(staging, kit)
    return kit, replaced, new, root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="renew_kit.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("participant", help="whose certificate to renew: the server's, a site's or an admin's name as in "
                                       "project.yml (e.g. site-1, fl-server, admin@fl-demo.org)")
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"),
                   help="the federation's project.yml (default: the project's)")
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"),
                   help="where provisioning keeps its state and the kits (default: the project's workspace/)")
    p.add_argument("--service-uid", type=int, default=container_uid(),
                   help="when run as root, chown the kit to this uid: the containers' (FL_UID of .env, else the "
                        f"image's {IMAGE_UID}; default {container_uid()}); 0 = leave as is")
    args = p.parse_args(argv)
    try:
        kit, replaced, new, root = renew_kit(args.project, args.workspace, args.participant, args.service_uid)
    except (ProjectError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    capped = " (capped at the root CA's expiry: a new root CA needs every kit re-provisioned)" \
        if new.not_after >= root.not_after else ""
    service = service_of(load_project(args.project), args.participant)
    print(f"{args.participant}: new kit {os.path.relpath(kit)}, certificate valid until "
          f"{kit_expiry.when(new.not_after)}{capped}; the old kit is in {os.path.relpath(replaced)}\n"
          f"roll it: docker compose up -d --force-recreate {service} (a site on another host: "
          f"scripts/export_bundles.py --sites {args.participant} --force, then on that host move its kit/ aside, put the bundle's in its place and "
          f"docker compose up -d --force-recreate)")
    return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
