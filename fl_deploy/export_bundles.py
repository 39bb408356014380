"""Export one self-contained bundle per site (and one for the admin) for running the federation on many hosts.

    python3 scripts/export_bundles.py                       # every site of project.yml + the admin
    python3 scripts/export_bundles.py --sites site-2 --archive --force
    python3 scripts/export_bundles.py --server-address 10.0.0.5 --image registry.example.org/gpt2-fl:TAG

From the provisioned kits (workspace/kits/, scripts/provision.py) it writes, under --out (default
workspace/bundles/, git-ignored like the kits: a bundle holds the site's private key):

  <site>/   kit/ (the site's signed kit, as it is), compose.yaml (docker/site-host.yaml), compose.cpu.yaml,
            services.yaml (docker/services.yaml, which compose.yaml extends), assets/ (mounted at /assets),
            site-data/ (the site's own data, FL_SITE_DATA: mounted read-only at /data/site),
            .env (FL_SITE, FL_SERVER_NAME, FL_SERVER_ADDRESS= to fill in, FL_IMAGE, FL_GPUS, HF_HUB_OFFLINE, ...)
            and README.md: load the image, fill in .env, `docker compose up -d`.
  admin/    the admin's kit and a README on submitting jobs with the nvflare CLI from that machine.

The server's name and port come from project.yml (each site's bundle maps the host name its own kit dials); the
server's address is not in any kit: each site maps that name to FL_SERVER_ADDRESS with extra_hosts. Left empty,
`docker compose up` refuses to start and says to set it; --server-address must be an IP address the sites reach
(not a loopback or unspecified one, which inside a site's container is the container itself) or host-gateway. Send each site only its own bundle (--archive: a .tar.gz
per bundle, owner and modes kept).
"""

import argparse
import ipaddress
import json
import os
import shutil
import sys
import tarfile
import time

from fl_deploy import IMAGE, IMAGE_UID, ROOT
from fl_deploy.project import ProjectError, check_deployable, load_project

DOCKER = os.path.join(ROOT, "docker")
FILL_IN = ""  # FL_SERVER_ADDRESS left empty: compose refuses to start the site until it is filled in
DEFAULT_IMAGE = IMAGE


class ExportError(ValueError):
    pass


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"cannot read {path}: {e}")


def check_kit(kits_dir: str, name: str, kind: str, dial) -> str:
    """The kit's folder, after checking that it exists and dials what project.yml gives it (``dial``, a
    project.Dial: the server's default host, or the participant's connect_to): otherwise it is stale."""
    kit = os.path.join(kits_dir, name)
    startup = os.path.join(kit, "startup")
    if not os.path.isdir(startup):
        raise ExportError(
            f"no provisioned kit for {name!r} in {kits_dir}: run `python3 scripts/provision.py` "
            "(add --force after editing project.yml) first"
        )
    if kind == "site":
        cfg = read_json(os.path.join(startup, "fed_client.json"))
        dials = {s.get("service", {}).get("target") for s in cfg.get("servers", [])}
    else:
        cfg = read_json(os.path.join(startup, "fed_admin.json")).get("admin", {})
        dials = {f"{cfg.get('host')}:{cfg.get('port')}"}
    expected = f"{dial.host}:{dial.port}"
    if dials != {expected}:
        raise ExportError(
            f"the kit of {name!r} dials {', '.join(sorted(map(str, dials)))} but project.yml says {expected}: "
            "the kits are stale, re-provision (python3 scripts/provision.py --force)"
        )
    return kit


def check_server_address(address: str) -> str:
    """--server-address as the sites' FL_SERVER_ADDRESS: host-gateway or an IP address another host can reach
    (Docker's extra_hosts takes no names; a loopback or unspecified address is the site's own container)."""
    if address == FILL_IN:  # not given: the site's operator fills it in
        return address
    fix = ("give the server host's IP address as the sites reach it (ip addr on the server host), or "
           "host-gateway when a site runs on the server's own host")
    if address == "host-gateway":
        return address
    address = address[1:-1] if address.startswith("[") and address.endswith("]") else address  # [IPv6] as in URLs
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ExportError(f"--server-address {address!r} is not an IP address (Docker's extra_hosts takes no names "
                          f"or placeholders): {fix}; resolve a name first: getent ahostsv4 NAME (IPv6: getent "
                          "ahostsv6 NAME)") from None
    if ip.is_loopback or ip.is_unspecified:
        kind = "a loopback" if ip.is_loopback else "the unspecified"
        raise ExportError(f"--server-address {address} is {kind} address: inside a site's container it never "
                          f"reaches the server; {fix}")
    return address


def copy_tree_keep_owner(src: str, dst: str):
    """Copy modes (client.key stays 0600) and, where we may (root), the owner: the image's user must read it."""
    shutil.copytree(src, dst, symlinks=True)
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in [None, *dirnames, *filenames]:
            s = dirpath if name is None else os.path.join(dirpath, name)
            d = os.path.normpath(os.path.join(dst, rel) if name is None else os.path.join(dst, rel, name))
            st = os.lstat(s)
            os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)


def env_template(site: str, server: str, port: int, project_name: str, image: str, address: str,
                 offline: str) -> str:
    return f"""\
# Settings for site {site!r} of project {project_name!r}; docker compose reads this file. Fill in FL_SERVER_ADDRESS.

# --- who: from project.yml, do not change (they must match the certificates in ./kit) -----------------------
FL_SITE={site}
# The server's certificate name: the kit dials {server}:{port}; extra_hosts maps the name to the address below.
FL_SERVER_NAME={server}
# FILL IN: IP address of the server host (the operator of the server tells you; port {port} must be reachable from
# here), or host-gateway when the server runs on this very host. Not 127.0.0.1 or 0.0.0.0: inside the container
# that is the container itself. Docker's extra_hosts takes no DNS names: resolve one first, e.g.
# getent ahostsv4 fl.example.org | awk 'NR==1{{print $1}}'   (an IPv6-only server: ahostsv6, and FL_IPV6=true)
FL_SERVER_ADDRESS={address}
# true: the site's network gets IPv6, to reach an IPv6 FL_SERVER_ADDRESS (Docker Engine 27+ picks the subnet itself)
FL_IPV6={"true" if ":" in address else "false"}

# --- how ---------------------------------------------------------------------------------------------------
# The image (docker load -i ... or docker pull ...); its user (uid {IMAGE_UID} unless built with FL_UID) reads ./kit.
FL_IMAGE={image}
# GPU device ids for this site, comma-separated (nvidia-smi -L). No GPU: use the CPU overlay below.
FL_GPUS=0
COMPOSE_FILE=compose.yaml
# COMPOSE_FILE=compose.yaml:compose.cpu.yaml
FL_SITE_SHM_SIZE=8gb
# 1 = never contact the Hugging Face hub: put model and data under FL_ASSETS_DIR (mounted read-only at /assets)
HF_HUB_OFFLINE={offline}
FL_ASSETS_DIR=./assets
# The site's own data, for jobs with FL_DATA_SOURCE=site: a folder on this host holding train.parquet, .jsonl,
# .json or .csv with a text column (test.* optional), mounted read-only at /data/site; no job ever names it.
FL_SITE_DATA=./site-data
# The compose project (containers, network and volumes are named after it).
FL_SITE_PROJECT={project_name}-{site}
"""


def site_readme(site: str, server: str, port: int, image: str) -> str:
    return f"""\
# Site `{site}` — run it on this host

This folder is all the site needs: `kit/` (the site's signed startup kit; `kit/startup/client.key` is its
private key, keep it here), `compose.yaml` + `services.yaml` (the service), `compose.cpu.yaml` (no-GPU overlay),
`.env` (settings), `assets/` (mounted read-only at `/assets`, for offline models and data) and `site-data/`
(this site's own data for jobs with `FL_DATA_SOURCE=site`: `train.parquet`, `.jsonl`, `.json` or `.csv` with a `text`
column, `test.*` of the same kind optional, or a `save_to_disk` folder; `FL_SITE_DATA`).

Needs Docker Engine with Compose v2 and, for GPUs, the NVIDIA Container Toolkit. The server must accept
connections on port {port} from this host; the site opens no port itself.

```bash
docker load -i gpt2-fl-image.tar        # 1. the image: made with `docker save {image} -o gpt2-fl-image.tar`
                                        #    where it was built (or docker pull {image}, from your registry)
$EDITOR .env                            # 2. FL_SERVER_ADDRESS=<server IP>, FL_GPUS (or the CPU overlay)
docker compose up -d                    # 3. start; healthy = registered with the server
```

Then `docker compose ps` shows `healthy` once the site has registered with `{server}`, and
`docker compose logs -f site` follows it (the container is named after the site). While it cannot connect, the
log and `docker inspect --format '{{{{json .State.Health}}}}' <container>` say, from about 20 s after the start,
which address it dials and why it fails (`cannot reach {server}:{port} at ...`). Stop with `docker compose down` (`down -v` also deletes the site's
workspace volume).

- The kit dials `{server}:{port}` and checks the server's certificate against the name `{server}`;
  `extra_hosts` maps that name to `FL_SERVER_ADDRESS`, so nothing in `kit/` is ever edited. Use an IP address
  (Docker does not resolve DNS names in `extra_hosts`), or `host-gateway` when the server runs on this host.
- The container runs as the image's unprivileged user (uid {IMAGE_UID} unless the image was built with another
  `FL_UID`): it must be able to read `kit/` (`sudo chown -R {IMAGE_UID}:{IMAGE_UID} kit` if you unpacked it as yourself).
"""


def admin_readme(admin: str, server: str, port: int, image: str) -> str:
    return f"""\
# Admin `{admin}` — submit jobs from this machine

`kit/` is the admin's signed startup kit (`kit/startup/client.key` is the admin's private key). It connects to
`{server}:{port}` and checks the server's certificate against the name `{server}`, so this machine must resolve
`{server}` to the server's address — without editing the kit.

With the NVFlare CLI on this machine (`pip install nvflare==2.9.0`):

```bash
echo "<server IP>  {server}" | sudo tee -a /etc/hosts     # the name the kit dials -> the server's address
nvflare system status --startup-kit ./kit                  # server and registered sites
nvflare job submit -j <job folder> --startup-kit ./kit     # e.g. the project's jobs/gpt2-fedavg-stream
nvflare job list --startup-kit ./kit
nvflare job download <job id> -o ./results --startup-kit ./kit
```

Or without installing anything but Docker, with the project's image and an `extra_hosts` (`--add-host`)
mapping instead of /etc/hosts (the CLI writes into the kit, so the container works on a copy):

```bash
docker run --rm -it --add-host {server}:<server IP> -v "$PWD/kit:/kit:ro" -v "$PWD/jobs:/jobs:ro" \\
  --entrypoint bash {image} -c 'cp -r /kit ~/kit && nvflare job submit -j /jobs/gpt2-fedavg-stream --startup-kit ~/kit'
```

The job folder comes from the project (`python3 scripts/make_job.py --out jobs/gpt2-fedavg-stream`, which takes
the site list from project.yml). Keep this kit private: whoever holds it may submit code that runs at every site.
"""


def archive(bundle: str) -> str:
    path = bundle.rstrip(os.sep) + ".tar.gz"
    with tarfile.open(path + ".part", "w:gz") as tar:
        tar.add(bundle, arcname=os.path.basename(bundle.rstrip(os.sep)))
    os.replace(path + ".part", path)
    return path


def prepare(dest: str):
    if os.path.lexists(dest):
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        else:
            os.remove(dest)
    os.makedirs(dest)


def export(project_path: str, workspace: str, out: str, sites: list = None, admin: bool = True,
           image: str = DEFAULT_IMAGE, server_address: str = FILL_IN, offline: str = "0", force: bool = False,
           make_archives: bool = False) -> dict:
    project = load_project(project_path)
    check_deployable(project)
    server_address = check_server_address(server_address)
    server, port = project.server_host, project.port
    kits_dir = os.path.join(workspace, "kits")
    if not os.path.isdir(kits_dir):
        raise ExportError(f"no kits in {kits_dir}: provision first (python3 scripts/provision.py)")
    chosen = list(project.sites) if not sites else sites
    unknown = [s for s in chosen if s not in project.sites]
    if unknown:
        raise ExportError(f"unknown site(s) {', '.join(unknown)}: project.yml's sites are {', '.join(project.sites)}")
    if "\n" in server_address or "\n" in image:
        raise ExportError("--server-address and --image must be one line")

    # Check every kit before writing anything.
    kits = {s: check_kit(kits_dir, s, "site", project.dials[s]) for s in chosen}
    admins = project.admins if admin else ()
    admin_kits = {a.service: (a.name, check_kit(kits_dir, a.name, "admin", project.dials[a.name])) for a in admins}

    names = [*kits, *admin_kits]
    existing = [n for n in names if os.path.lexists(os.path.join(out, n))]
    if existing and not force:
        raise ExportError(f"bundle(s) {', '.join(existing)} already exist in {out} (a .env there may hold a "
                          "site's settings): pass --force to replace them")

    written = {}
    for site, kit in kits.items():
        dest = os.path.join(out, site)
        prepare(dest)
        copy_tree_keep_owner(kit, os.path.join(dest, "kit"))
        shutil.copy2(os.path.join(DOCKER, "site-host.yaml"), os.path.join(dest, "compose.yaml"))
        shutil.copy2(os.path.join(DOCKER, "site-host.cpu.yaml"), os.path.join(dest, "compose.cpu.yaml"))
        shutil.copy2(os.path.join(DOCKER, "services.yaml"), os.path.join(dest, "services.yaml"))
        os.makedirs(os.path.join(dest, "assets"))
        os.makedirs(os.path.join(dest, "site-data"))
        with open(os.path.join(dest, ".env"), "w") as f:
            f.write(env_template(site, project.dials[site].host, port, project.name, image, server_address, offline))
        with open(os.path.join(dest, "README.md"), "w") as f:
            f.write(site_readme(site, project.dials[site].host, port, image))
        written[site] = dest
    for bundle, (name, kit) in admin_kits.items():  # named as the compose services: admin, admin-2, ...
        dest = os.path.join(out, bundle)
        prepare(dest)
        copy_tree_keep_owner(kit, os.path.join(dest, "kit"))
        with open(os.path.join(dest, "README.md"), "w") as f:
            f.write(admin_readme(name, project.dials[name].host, port, image))
        written[bundle] = dest
    archives = {name: archive(path) for name, path in written.items()} if make_archives else {}
    return {"server": server, "port": port, "bundles": written, "archives": archives}


def default_image() -> str:
    from fl_deploy.host import setting

    return setting("FL_IMAGE", DEFAULT_IMAGE)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="export_bundles.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"), help="NVFlare project file")
    p.add_argument("--workspace", default=os.path.join(ROOT, "workspace"),
                   help="provisioning workspace: kits are read from <workspace>/kits")
    p.add_argument("--out", default=None, help="where the bundles go (default: <workspace>/bundles)")
    p.add_argument("--sites", default="", help="comma-separated sites to export (default: all of project.yml)")
    p.add_argument("--no-admin", action="store_true", help="do not export the admin bundle(s)")
    p.add_argument("--image", default=None, help=f"FL_IMAGE in the sites' .env (default: $FL_IMAGE, else {DEFAULT_IMAGE})")
    p.add_argument("--server-address", default=FILL_IN,
                   help="prefill FL_SERVER_ADDRESS: the server host's IP as the sites reach it (not loopback or "
                        "0.0.0.0), or host-gateway (default: left empty, to fill in on each site host)")
    p.add_argument("--offline", action="store_true", help="HF_HUB_OFFLINE=1 in the sites' .env")
    p.add_argument("--archive", action="store_true", help="also write <bundle>.tar.gz next to each bundle")
    p.add_argument("--force", action="store_true", help="replace bundles that already exist")
    args = p.parse_args(argv)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    out = args.out or os.path.join(args.workspace, "bundles")
    t0 = time.monotonic()
    try:
        result = export(args.project, args.workspace, out, sites=sites, admin=not args.no_admin,
                        image=args.image or default_image(), server_address=args.server_address,
                        offline="1" if args.offline else "0", force=args.force, make_archives=args.archive)
    except (ProjectError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - t0
    print(f"server {result['server']}:{result['port']} (from {os.path.relpath(args.project)})")
    for name, path in result["bundles"].items():
        extra = f"  + {os.path.relpath(result['archives'][name])}" if name in result["archives"] else ""
        print(f"{name:>24}: {os.path.relpath(path)}/{extra}")
    print(f"exported {len(result['bundles'])} bundle(s) in {elapsed:.2f}s; on each site host: "
          "load the image, fill in FL_SERVER_ADDRESS in .env, docker compose up -d")
    return 0
