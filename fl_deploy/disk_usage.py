"""Where the deployment's disk goes, job after job, and what may be pruned (scripts/disk_usage.py).

    python3 scripts/disk_usage.py            # what each part holds; what --prune would remove, and why
    python3 scripts/disk_usage.py --prune    # remove it

What grows with every job:
  * the server's volume (server-workspace, /workspace): checkpoints/<job_id>/ (the last global model of each job
    and progress.json, for --resume), jobs-storage/<job_id>/ (NVFlare's job store: the job folder and, once the job
    ended, its workspace, the global model again), snapshot-storage/, tmp/ (the disk-offload spool of a running job);
  * the admin console's volume (admin-workspace, /workspace): the staged job folders (staged-jobs/) and the
    downloads (downloads/) of scripts/submit_job.py, which removes each once the job is submitted or its results are
    on the host; never the container's writable layer (docker inspect --size: SizeRw, shown);
  * this host: results/<job_id>/, yours: never pruned.

The rule of --prune: a finished job whose results are on this host (results/<job_id>/workspace/) leaves the job store
(`nvflare job delete`), and, when it completed, its checkpoints/<job_id>/ go too (its global model is in
results/<job_id>/; a completed job is not resumed). Kept: a job that runs or waits, a job whose results are not on
this host, and the checkpoints of every job that did not complete (what `submit_job.py --resume JOB_ID` starts
from). In the admin console, staged folders and downloads older than STALE_MIN minutes (left by a submit_job.py
that was interrupted) are removed.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

from fl_deploy import ROOT
from fl_deploy.host import ADMIN_KIT, ADMIN_SERVICE, HostError, admin_nvflare, check_docker, compose

SERVER = "/workspace"
SERVER_PARTS = ("checkpoints", "jobs-storage", "snapshot-storage", "tmp")
ADMIN_STAGED = "/workspace/staged-jobs"  # on the admin's volume, not in its writable layer
ADMIN_DOWNLOADS = "/workspace/downloads"
STALE_MIN = 60
COMPLETED = "FINISHED:COMPLETED"


def remove_in_admin(path: str, admin: str, env_file=None, job_id: str = None):
    """Remove a staged job folder or a download from the admin console once it served (best effort); with job_id,
    also what NVFlare's download left of that job in the admin kit's transfer folder (its writable layer: the FLARE
    API downloads there first, then moves the folder to -o; flare_api.py download_job_result)."""
    targets = shlex.quote(path)
    if job_id:
        left = shlex.quote(f"{ADMIN_KIT}/transfer/{job_id}")
        targets += f" {left} {left}__*"
    compose("exec", "-T", admin, "sh", "-c", f"rm -rf {targets}", check=False, env_file=env_file)


def download_path(envelope: dict, inside: str, job_id: str) -> str:
    """Where `nvflare job download -o inside` put the job: its reported download_path (NVFlare renames to
    <job_id>__N when <job_id> is taken, file_transfer.py _rename_folder), else inside/<job_id>."""
    path = (envelope.get("data") or {}).get("download_path") or ""
    return path if path.startswith(inside + "/") else f"{inside}/{job_id}"


VOLUME_FULL = ("the server's volume is full", "No space left on device")  # app_code/fl_server/disk_guard.py; errno 28
FULL_BELOW = 64 * 2**20  # disk_guard.FLOOR_BYTES


def facts(dest, env_file=None) -> list:
    """Why a job ended, if the server's volume filled: the job log's own line (the server workflow's reason,
    disk_guard.py, or an ENOSPC error), else the volume's free space now when it is below FULL_BELOW."""
    try:
        with open(os.path.join(dest, "workspace", "log.txt"), errors="replace") as f:
            line = next((line for line in f if any(m in line for m in VOLUME_FULL)), None)
    except (OSError, TypeError):
        line = None
    if line:
        return [f"the server's volume filled during the job; its log: {line.strip().split(' - ')[-1][:400]}"]
    run = compose("exec", "-T", "server", "df", "-Pk", SERVER, check=False, env_file=env_file)
    rows = (run.stdout or "").strip().splitlines()
    try:
        free = int(rows[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        return []
    if free >= FULL_BELOW:
        return []
    return [f"the server's volume is full: {free / 2**20:.0f} MiB free on {SERVER} (docker compose exec server df -h "
            f"{SERVER}); free space with python3 scripts/disk_usage.py --prune"]


def parse_du(text: str) -> dict:
    """`du -sk PATH...` output -> {path: bytes}."""
    sizes = {}
    for line in text.splitlines():
        kib, _, path = line.partition("\t")
        if kib.strip().isdigit() and path:
            sizes[path.strip()] = int(kib) * 1024
    return sizes


def du(service: str, paths: list, env_file=None) -> dict:
    """{path: bytes} of the paths (globs allowed) inside a service's container."""
    # One du per path: du counts a file once over all its arguments, so a folder and its parent in one call would
    # hide each other's bytes.
    script = f"for p in {' '.join(paths)}; do [ -e \"$p\" ] && du -sk \"$p\"; done 2>/dev/null; true"
    run = compose("exec", "-T", service, "sh", "-c", script, check=False, env_file=env_file)
    return parse_du(run.stdout or "")


def writable_layer_bytes(service: str, env_file=None):
    """The container's writable layer (docker inspect --size: SizeRw), or None."""
    run = compose("ps", "-q", service, check=False, env_file=env_file)
    cid = (run.stdout or "").strip()
    if not cid:
        return None
    out = subprocess.run(["docker", "inspect", "--size", cid], capture_output=True, text=True)
    try:
        return int(json.loads(out.stdout)[0].get("SizeRw") or 0)
    except (ValueError, IndexError, KeyError):
        return None


def downloaded(results: str) -> set:
    """Job ids whose results are on this host (results/<job_id>/workspace/)."""
    if not os.path.isdir(results):
        return set()
    return {name for name in os.listdir(results) if os.path.isdir(os.path.join(results, name, "workspace"))}


def plan(jobs: list, checkpoints: set, on_host: set) -> list:
    """What --prune removes: [(kind, job_id, path or None, why)], kind "job store" or "checkpoints".
    jobs: the server's job list ([{"job_id", "status"}]); checkpoints: job ids with a checkpoints/<job_id>/."""
    out = []
    for job in jobs:
        job_id, status = job.get("job_id"), str(job.get("status", ""))
        if not job_id or not status.startswith("FINISHED") or job_id not in on_host:
            continue
        out.append(("job store", job_id, None, f"{status}, results on this host"))
        if status == COMPLETED and job_id in checkpoints:
            out.append(("checkpoints", job_id, f"{SERVER}/checkpoints/{job_id}",
                        "completed: its global model is in results/, no resume needs it"))
    return out


def size(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def report(args) -> int:
    server = du("server", [f"{SERVER}/{p}" for p in SERVER_PARTS] + [f"{SERVER}/checkpoints/*", SERVER],
                env_file=args.env_file)
    admin = du(args.admin, [ADMIN_STAGED, ADMIN_DOWNLOADS, "/workspace"], env_file=args.env_file)
    jobs = (admin_nvflare("job", "list", env_file=args.env_file, service=args.admin).get("data") or [])
    checkpoints = {os.path.basename(p) for p in server if p.startswith(f"{SERVER}/checkpoints/")}
    on_host = downloaded(args.results)
    print(f"server volume ({SERVER}): {size(server.get(SERVER))}")
    for part in SERVER_PARTS:
        print(f"  {part + '/':<20} {size(server.get(f'{SERVER}/{part}', 0)):>10}")
    print(f"admin console ({args.admin}) volume /workspace: {size(admin.get('/workspace'))} (staged jobs "
          f"{size(admin.get(ADMIN_STAGED, 0))}, downloads {size(admin.get(ADMIN_DOWNLOADS, 0))}); its writable "
          f"layer: {size(writable_layer_bytes(args.admin, args.env_file))}")
    host = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(args.results) for f in names
               if not os.path.islink(os.path.join(d, f))) if os.path.isdir(args.results) else 0
    print(f"this host: {os.path.relpath(args.results)}/ {size(host)} ({len(on_host)} jobs; yours, never pruned)")
    todo = plan(jobs, checkpoints, on_host)
    print(f"--prune {'removes' if args.prune else 'would remove'} (rule: scripts/disk_usage.py --help):"
          if todo else "--prune: nothing to remove (rule: scripts/disk_usage.py --help)")
    for kind, job_id, path, why in todo:
        extra = f" ({size(server.get(path))})" if path else ""
        print(f"  {kind}: {job_id}{extra}: {why}")
    if not args.prune:
        return 0
    failed = []
    for kind, job_id, path, _ in todo:
        if kind == "job store":
            got = admin_nvflare("job", "delete", job_id, "--force", env_file=args.env_file, service=args.admin,
                                check=False)
            if got.get("status") != "ok":
                failed.append(f"{job_id}: {got.get('message')}")
        else:
            compose("exec", "-T", "server", "rm", "-rf", path, check=False, env_file=args.env_file)
    stale = " ".join(shlex.quote(p) for p in (ADMIN_STAGED, ADMIN_DOWNLOADS))
    compose("exec", "-T", args.admin, "sh", "-c", f"find {stale} -mindepth 1 -maxdepth 1 -mmin +{STALE_MIN} "
            "-exec rm -rf {} + 2>/dev/null; true", check=False, env_file=args.env_file)
    if failed:
        print("error: the job store kept " + "; ".join(failed), file=sys.stderr)
        return 1
    after = du("server", [SERVER], env_file=args.env_file).get(SERVER)
    print(f"pruned: the server volume holds {size(after)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="disk_usage.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prune", action="store_true", help="remove what the rule above allows")
    p.add_argument("--env-file", default=None, help="compose .env file (default: ./.env)")
    p.add_argument("--admin", default=ADMIN_SERVICE, metavar="SERVICE", help="admin console to ask the server through")
    p.add_argument("--results", default=os.path.join(ROOT, "results"), help="where submit_job.py put the results")
    args = p.parse_args(argv)
    try:
        check_docker()
        return report(args)
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
