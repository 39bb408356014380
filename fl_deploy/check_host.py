"""Check this host before starting the federation; each problem is one sentence that says what to do.

    python3 scripts/check_host.py            # GPU deployment
    python3 scripts/check_host.py --cpu      # CPU overlay: no GPU runtime needed

In this order, stopping at the first problem (exit 2): Docker answers; Compose is new enough, and what rootless
Docker, Podman or SELinux need (fl_deploy/docker_engine.py); a working GPU path (not with --cpu); the containers'
user can read the model and data folder (FL_ASSETS_DIR, default assets/) and each site's own data folder
(FL_SITE_DATA_<SITE> in .env); every kit of workspace/kits/ is valid by this host's clock, printed one line per kit
("kit site-1: certificate until ..."); with --kits every kit the services mount is provisioned; with --port the
server's port is free. Warnings (exit 0): what the host lacks but the deployment works without (THP for huge pages,
an unlabelled folder on SELinux, rootless Docker's uid mapping). "host ok" when nothing stopped it.
"""

import argparse
import json
import os
import socket
import stat
import subprocess
import sys

from fl_deploy import IMAGE, ROOT, docker_engine, huge_pages, kit_expiry
from fl_deploy.host import HostError, check_docker, compose, container_uid, env_settings, running_services, setting


def check_gpu_runtime():
    """GPUs need one working path from Docker to the containers (docker_engine.gpu_choice: NVIDIA's hook, the nvidia
    runtime, or CDI), not the runtime entry alone."""
    if os.environ.get("FL_SKIP_GPU_CHECK"):
        return
    version = subprocess.run(["docker", "--version"], capture_output=True, text=True).stdout  # Podman says so
    code, line = docker_engine.gpu_choice(docker_engine.engine_info(), docker_version=version)
    if code:
        raise HostError(line if code == 2 else f"GPUs are requested but {line}: run on CPU with --cpu")


def compose_model() -> dict:
    """The deployment as Compose resolves it (`docker compose config`): the authority on what will run."""
    return json.loads(compose("config", "--format", "json").stdout)


def check_kits(model: dict):
    """Every kit a service mounts at /kit must be provisioned (stdlib only: this runs before any venv)."""
    missing = sorted({os.path.relpath(v["source"], ROOT) for svc in model.get("services", {}).values()
                      for v in svc.get("volumes") or [] if v.get("target") == "/kit" and kit_missing(v["source"])})
    if missing:
        raise HostError(f"no startup kit in {', '.join(missing)}: provision first (scripts/demo.sh does it, or "
                        "scripts/in_image.sh scripts/provision.py)")


def kit_missing(folder: str) -> bool:
    """No startup/ in ``folder``; one this user may not enter is there (a kit closed by umask 077 or given to the
    containers' uid), and the containers' own start check (fl-kit-present) says whether they can read it."""
    try:
        return not stat.S_ISDIR(os.stat(os.path.join(folder, "startup")).st_mode)
    except PermissionError:
        return False
    except OSError:
        return True


def check_readable(folder: str, uid: int, what: str) -> list:
    """What under ``folder`` the containers' user (uid) cannot read or enter: ["path (mode, uid)", ...]."""
    def can(st, bits):  # bits: 4 = read, 5 = read + enter (directories)
        mode = st.st_mode
        return (st.st_uid == uid and (mode >> 6) & bits == bits) or (st.st_gid == uid and (mode >> 3) & bits == bits) \
            or mode & bits == bits

    def shown(path):  # as the user wrote it: relative to the project when it is inside it
        return os.path.relpath(path, ROOT) if os.path.abspath(path).startswith(ROOT + os.sep) else path

    blocked = []
    for dirpath, dirs, files in os.walk(folder):
        for name, bits in [(d, 5) for d in dirs] + [(f, 4) for f in files]:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            if not can(st, bits):
                blocked.append(f"{shown(path)} (mode {st.st_mode & 0o777:04o}, uid {st.st_uid})")
    if blocked:
        more = f" and {len(blocked) - 3} more" if len(blocked) > 3 else ""
        raise HostError(f"the containers' user (uid {uid}) cannot read {', '.join(blocked[:3])}{more}: {what}; run "
                        f"chmod -R a+rX {shown(folder)}")
    return blocked


def check_assets(uid: int):
    """Everything under the assets folder (FL_ASSETS_DIR, default assets/; mounted read-only at /assets) must be
    readable by the containers' user. A file only its owner may read (save_pretrained can write 0600) fails to load
    in the container with Hugging Face's misleading 'No such file or directory'."""
    check_readable(os.path.join(ROOT, setting("FL_ASSETS_DIR", "assets")), uid,
                   "loading would fail with 'No such file or directory'")


def check_site_data(uid: int):
    """Each site's own data folder named in .env (FL_SITE_DATA_<SITE>, jobs with --data_source site): it exists and
    the containers' user can read all of it (a job would stop at the site's start otherwise)."""
    for name, folder in sorted(env_settings("FL_SITE_DATA_").items()):
        if not folder:
            continue
        path = os.path.join(ROOT, folder)
        if not os.path.isdir(path):
            raise HostError(f"{name}={folder} is not a folder on this host: Docker would mount an empty folder "
                            f"it creates, and a --data_source site job would stop at that site; fix the path in .env")
        check_readable(path, uid, f"{name}'s site could not read its own data")


def check_kit_expiry(kits_dir: str = os.path.join(ROOT, "workspace", "kits"), now=None):
    """Print until when each kit of the deployment's kits folder works (its certificate and root CA, one line per
    kit); HostError naming the first kit that is expired, or not valid yet by this host's clock (issue 24)."""
    kits = kit_expiry.report(kits_dir, now)
    for line in kits.lines:
        print(f"kit {line}")
    if kits.problems:
        raise HostError(kits.problems[0])


def published_ports(model: dict) -> list:
    """(host address, port) of every port the server service publishes."""
    return [(p.get("host_ip") or "0.0.0.0", int(p["published"]))
            for p in model.get("services", {}).get("server", {}).get("ports") or [] if p.get("published")]


def check_port(bind: str, port: int):
    if "server" in running_services():
        return  # ours already holds it
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:  # "::" on an IPv6-only host
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError:
            raise HostError(
                f"port {port} on {bind} is already in use: stop what holds it (ss -ltnp 'sport = :{port}') "
                "or change fed_learn_port in project.yml and re-provision"
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="check_host.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="skip the GPU runtime check")
    p.add_argument("--kits", action="store_true", help="also require the kit of every service compose runs")
    p.add_argument("--port", action="store_true", help="also require the server's port to be free")
    args = p.parse_args(argv)
    try:
        check_docker()
        problem, notes = docker_engine.host_findings(container_uid(), setting("FL_IMAGE", IMAGE))  # Compose, Podman..
        if problem:
            raise HostError(problem)
        if not args.cpu:
            check_gpu_runtime()
        check_assets(container_uid())
        check_site_data(container_uid())
        check_kit_expiry()
        if args.kits or args.port:
            model = compose_model()
            if args.kits:
                check_kits(model)
            for bind, port in published_ports(model) if args.port else []:
                check_port(bind, port)
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for warning in notes + [huge_pages.thp_warning(huge_pages.thp_mode())]:
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    print("host ok")
    return 0
