#!/usr/bin/env python3
"""Submit -> first training step on the compose deployment: the timeline of one tiny job, as a user submits it.

    .venv/bin/python benchmarks/first_step.py                          # this checkout
    .venv/bin/python benchmarks/first_step.py --before main            # main's code, then this checkout's
    .venv/bin/python benchmarks/first_step.py --before main --repeat 2 # each variant twice, alternating

Each variant runs in a copy of the project (--before REV: `git archive REV`): provisioned with 2 sites on a free
port, the tiny offline model and IMDB-shaped data made (scripts/make_tiny_assets.py), `docker compose up --wait`
with the CPU overlay (not timed), then `python3 scripts/submit_job.py` with the demo's --tiny job settings (2
rounds of 5 steps, batch 4, 32 held-out rows), timed from its call. The timeline comes from the job's logs
(fl_deploy/timeline.py, this checkout's for every variant) plus the moments submit_job.py printed the generated
job and the job id; the stack is then torn down. One image serves every variant: the job brings its own code, the image only the
packages and the entrypoint (built once from this checkout if missing).

Writes <out>/first-step.csv (one row per variant and repeat: seconds since submit_job.py started, per event) and
prints each timeline.
"""

import argparse
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from fl_deploy import IMAGE_REPO, ROOT, timeline
from fl_deploy.host import ADMIN_KIT
from fl_deploy.harness import compose_stack
from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
# The demo's --tiny job (scripts/demo.sh), two rounds: what a user waits through.
TINY = compose_stack.tiny_job(rounds=2)
JOB_ID = re.compile(r"submitted job (\S+)")


def copy_variant(rev: str, work: str):
    """The project as of git revision rev (None: this checkout, as git sees it) in work."""
    if rev is None:
        compose_stack.copy_project(work, with_wheels=False)
        return
    tar = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(work)


def ensure_image(image: str, base_image: str):
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        return
    print(f"building {image} from this checkout (once) ...", flush=True)
    compose_stack.ensure_wheelhouse()
    env = dict(os.environ, FL_IMAGE=image, COMPOSE_FILE="compose.yaml:compose.cpu.yaml")
    if base_image:
        env["FL_BASE_IMAGE"] = base_image
    subprocess.run(["docker", "compose", "build", "server"], cwd=ROOT, env=env, check=True, timeout=3600)


def run_variant(name: str, rev: str, work: str, image: str) -> dict:
    """One tiny job on a fresh stack of this variant: {"events": [(label, epoch s)], "status", "job_s", ...}."""
    from benchmarks.exchange import write_bench_project

    copy_variant(rev, work)
    write_bench_project(os.path.join(work, "project.yml"), SITES, local_federation.free_port())
    env = compose_stack.checkout_env(work, dict(
        os.environ, FL_PROJECT_NAME=f"firststep-{os.getpid()}-{name}", FL_IMAGE=image, FL_SERVER_BIND="127.0.0.1",
        COMPOSE_FILE="compose.yaml:compose.cpu.yaml", **TINY))

    def run(cmd, timeout=900, check=True):
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} ...: {(r.stderr or r.stdout)[-1500:]}")
        return r

    run([sys.executable, "scripts/provision.py"])
    run([sys.executable, "scripts/make_tiny_assets.py", "--out", "assets/tiny"])
    for dirpath, _, files in os.walk(os.path.join(work, "assets")):  # the containers' user reads them
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        run(["docker", "compose", "up", "-d", "--no-build", "--wait"], timeout=900)
        lines = []  # (host time, line) of submit_job.py's output as it prints it

        started = time.time()
        proc = subprocess.Popen(["python3", "scripts/submit_job.py"], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)

        def read():
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        proc.wait(timeout=1800)
        reader.join(30)
        job_s = time.time() - started
        output = "\n".join(line for _, line in lines)
        submitted = next(((t, m.group(1)) for t, line in lines if (m := JOB_ID.search(line))), None)
        if submitted is None:
            raise RuntimeError(f"submit_job.py printed no job id (exit {proc.returncode}):\n{output[-3000:]}")

        def nvflare(*cli):
            import json

            out = run(["docker", "compose", "exec", "-T", "admin", "nvflare", "--format", "json", *cli,
                       "--startup-kit", ADMIN_KIT], check=False).stdout
            return json.loads(out.strip().splitlines()[-1])

        job_id = submitted[1]
        def site_log(site, job):
            r = run(["docker", "compose", "exec", "-T", site, "cat", f"/workspace/{job}/log.txt"], check=False)
            return r.stdout if r.returncode == 0 else None

        events = timeline.collect(job_id, nvflare, started, site_log=site_log)
        # submit_job.py's own progress, as it printed it: make_job.py's "job folder: ..." line, then the job id
        generated = next((t for t, line in lines if line.startswith("job folder:")), None)
        events.insert(1, ("job generated (make_job.py in the admin container)", generated))
        events.insert(3, ("job id back at submit_job.py", submitted[0]))  # after "job received by the server"
        status = "FINISHED:COMPLETED" if proc.returncode == 0 else f"exit {proc.returncode}"
        return {"job_id": job_id, "events": events, "status": status, "job_s": job_s, "output": output}
    finally:
        run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], check=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", metavar="REV", help="also run git revision REV's code first, in the same run")
    p.add_argument("--repeat", type=int, default=1, help="runs per variant, alternating (default 1)")
    p.add_argument("--image", default=f"{IMAGE_REPO}:bench", help="image tag to run (built from this checkout if missing)")
    p.add_argument("--base-image", default=os.environ.get("FL_BASE_IMAGE"),
                   help="base image for that build (default: the Dockerfile's, or $FL_BASE_IMAGE)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", f"first-step-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.before and subprocess.run(["git", "rev-parse", "--verify", f"{args.before}^{{commit}}"], cwd=ROOT,
                                      capture_output=True).returncode != 0:
        p.error(f"--before {args.before}: not a git revision of this checkout; give a commit, branch or tag")
    from fl_deploy import host

    try:
        host.check_docker()
    except host.HostError as e:
        p.error(str(e))
    ensure_image(args.image, args.base_image)
    variants = ([(f"before ({args.before})", args.before)] if args.before else []) + [("this checkout", None)]
    os.makedirs(args.out, exist_ok=True)
    work_root = tempfile.mkdtemp(prefix="first-step-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    rows, failed = [], []
    for i in range(args.repeat):
        for k, (name, rev) in enumerate(variants):
            print(f"running {name}, run {i + 1} ...", flush=True)
            r = run_variant(f"{k}-{i}", rev, os.path.join(work_root, f"{k}-{i}"), image=args.image)
            t0 = r["events"][0][1]
            print(f"{name}, run {i + 1}: " + timeline.report(r["job_id"], r["events"]) + "\n", flush=True)
            row = {"variant": name, "rev": rev or "HEAD+worktree", "run": i + 1, "status": r["status"],
                   "submit_job_s": round(r["job_s"], 1)}
            row.update({label: (round(t - t0, 1) if t is not None else "") for label, t in r["events"]})
            rows.append(row)
            if r["status"] != "FINISHED:COMPLETED":
                failed.append(f"{name} run {i + 1}: {r['status']}")
                print(r["output"][-3000:], file=sys.stderr)
    shutil.rmtree(work_root, ignore_errors=True)
    path = os.path.join(args.out, "first-step.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        w.writeheader()
        w.writerows(rows)
    print(f"written: {path}")
    if failed:
        print("error: runs that did not complete: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
