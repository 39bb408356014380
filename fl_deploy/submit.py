"""Submit the FedAvg job through the admin console, follow it round by round, and fetch its results.

    python3 scripts/submit_job.py                      # job settings from .env (FL_MODEL, FL_ROUNDS, ...)
    python3 scripts/submit_job.py --rounds 5 --max_steps 100    # any make_job.py flag is passed on
    python3 scripts/submit_job.py --job-folder jobs/gpt2-fedavg-stream   # submit a folder as it is
    python3 scripts/submit_job.py --resume JOB_ID      # after a server restart: go on from the last saved round

Runs on the host with only Docker and Python 3: the job is generated from app_code/ inside the admin container
(scripts/make_job.py, given every FL_* variable of .env and the environment, then the flags this script does not
know itself: `docker compose exec admin python3 /src/scripts/make_job.py --help` lists them), submitted with `nvflare job submit` and the admin's startup kit, followed with
`nvflare job meta` / `nvflare job logs`, and downloaded into results/<job_id>/.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from fl_deploy import ROOT
from fl_deploy.check_job import check_job
from fl_deploy.host import (ADMIN_KIT, ADMIN_SERVICE, HostError, admin_nvflare, check_docker, compose, env_settings,
                            require_admin, setting)

ROUND_RE = re.compile(r"Round (\d+) started")
RESULT_RE = re.compile(r"got result from client (\S+) for task: name=train")
FINISHED = "FINISHED"
SILENT_S = 45  # a site not heard from for this long is down (sites heartbeat every 10 s)
GONE_POLLS = 3  # polls in a row that find the job RUNNING in the store but not on the server: it was lost


class JobInterrupted(HostError):
    """The job stopped running without finishing (server restart): it can be resumed."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="submit_job.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", default=None, help="compose .env file (default: ./.env)")
    p.add_argument("--job-folder", help="submit this job folder instead of generating one from app_code/")
    p.add_argument("--resume", metavar="JOB_ID",
                   help="resubmit JOB_ID from its last persisted global model (same settings as now in .env)")
    p.add_argument("--timeout", type=float, default=float(setting("FL_JOB_TIMEOUT", "7200")),
                   help="seconds to wait for the job (it keeps running after a timeout)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between progress polls")
    p.add_argument("--server-grace", type=float, default=300.0,
                   help="seconds the server may not answer (restarting) before the job is reported interrupted")
    p.add_argument("--admin", default=ADMIN_SERVICE, metavar="SERVICE",
                   help="admin console to submit through: the compose service of one of project.yml's admins "
                        "(admin = the first, admin-2 the second, ...)")
    p.add_argument("--results", default=os.path.join(ROOT, "results"), help="download results under this folder")
    p.add_argument("--timeline", action="store_true",
                   help="after the job, print where its start went: submit -> job running -> site job processes "
                        "up -> data tokenised -> first optimizer step -> round 1 end (fl_deploy/timeline.py)")
    args, args.job_flags = p.parse_known_args(argv)
    bad = [a for a in args.job_flags if a.startswith("-") and not a.startswith("--")]
    if bad:
        p.error(f"unknown option {bad[0]}: this script's options are above; job settings are --<field> flags of "
                "make_job.py")
    if args.job_folder and args.job_flags:
        p.error(f"--job-folder submits a folder as it is: job settings ({' '.join(args.job_flags)}) cannot apply")
    if args.job_folder and args.resume:
        p.error("--resume generates its job: it cannot be combined with --job-folder")
    if args.job_folder:
        _, problems = check_job(args.job_folder)
        if problems:
            p.error(f"{args.job_folder} is not a complete job folder: {'; '.join(problems)}")
    return args


def job_environment(args) -> list:
    """`docker compose exec -e` options for every FL_* setting of .env and the environment (make_job.py takes
    the job's from them; the others are the deployment's and it leaves them alone)."""
    out = []
    for name, value in env_settings("FL_", args.env_file).items():
        out += ["-e", f"{name}={value}"]
    return out


def resume_flags(job_id: str, args) -> list:
    """--initial_ckpt/--start_round from the server's checkpoints/<job_id>/progress.json (on its volume)."""
    status = admin_nvflare("job", "meta", job_id, env_file=args.env_file, service=args.admin, check=False)
    state = (status.get("data") or {}).get("status", "")
    # After a server restart NVFlare 2.9 leaves the interrupted job RUNNING in its store for good (abort and
    # delete both refuse it): only a job the server really runs now blocks a resume.
    if state == "RUNNING" and job_id in live_jobs(args):
        raise HostError(f"job {job_id} is still RUNNING; abort it first (nvflare job abort {job_id}) or let it finish")
    run = compose("exec", "-T", "server", "cat", f"/workspace/checkpoints/{job_id}/progress.json",
                  check=False, env_file=args.env_file)
    if run.returncode != 0:
        raise HostError(f"no persisted global model for job {job_id} on the server volume: it ended before its first round")
    progress = json.loads(run.stdout)
    start = int(progress["completed_round"]) + 1
    print(f"resuming job {job_id}: rounds 1..{start} are kept (its checkpoint after round {start})")
    return ["--initial_ckpt", progress["checkpoint"], "--start_round", str(start)]


def stage_job(args) -> tuple:
    """Put the job folder into the admin container and check it there, in one `docker compose exec` (one round trip
    less before the submission; docs/benchmarks.md, "Submit -> first training step"): the folder generated by
    make_job.py (or the --job-folder copied in), then check_job.py. Returns (its path there, the check's report)."""
    dest = f"/home/fl/jobs/{time.strftime('%Y%m%d-%H%M%S')}"
    check = shlex.join(["python3", "-m", "fl_deploy.check_job", dest, "--imports", "--json"])
    if args.job_folder:
        tar = subprocess.run(["tar", "-C", args.job_folder, "-c", "."], capture_output=True, check=True).stdout
        run = compose("exec", "-T", args.admin, "sh", "-c", f"mkdir -p {dest} && tar -x -C {dest} && {check}",
                      input=tar, check=False, env_file=args.env_file)
        stdout = run.stdout.decode(errors="replace") if isinstance(run.stdout, bytes) else run.stdout or ""
        stderr = run.stderr.decode(errors="replace") if isinstance(run.stderr, bytes) else run.stderr or ""
        what = "copy the job folder into the admin container"
    else:
        extra = resume_flags(args.resume, args) if args.resume else []
        make = shlex.join(["python3", "/src/scripts/make_job.py", "--out", dest, "--project", "/src/project.yml",
                           *args.job_flags, *extra])
        run = compose("exec", "-T", *job_environment(args), args.admin, "sh", "-c", f"{make} && {check}",
                      check=False, env_file=args.env_file)
        stdout, stderr = run.stdout or "", run.stderr or ""
        what = "generate the job"
    lines = stdout.strip().splitlines()
    report = check_report(lines[-1] if lines else "")
    if report is None:  # the check never ran: generating or copying the job failed
        raise HostError(f"could not {what}: {(stderr or stdout).strip()[-800:]}")
    if lines[:-1]:
        print("\n".join(lines[:-1]))
    return dest, report


def check_report(line: str) -> dict:
    """check_job.py --json's report ({"sites": [...], "problems": [...]}) from its output line, else None."""
    try:
        report = json.loads(line)
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) and "problems" in report else None


def check_staged_job(report: dict) -> list:
    """The staged job's sites, from check_job.py's report (files and imports, checked in the admin container: the
    sites' image); stops when it found problems."""
    if report["problems"]:
        raise HostError("the job is incomplete, nothing was submitted:\n  " + "\n  ".join(report["problems"])
                        + "\n  fix: regenerate it (scripts/make_job.py) or restore the missing files")
    return report["sites"]


def site_status(args) -> dict:
    """`nvflare system status`: the sites the server lists, with when it last heard from each."""
    return admin_nvflare("system", "status", env_file=args.env_file, service=args.admin)


def require_sites(sites: list, args, status: dict = None):
    """Refuse to submit a job whose sites are not all connected: NVFlare would hold it, unscheduled. status:
    site_status() fetched already (main() asks for it while the job is generated), else fetched here."""
    status = status if status is not None else site_status(args)
    # The server lists a lost site for 10 minutes (its heartbeat timeout); a live one heartbeats every 10 s.
    now = time.time()
    connected = sorted(c.get("client_name") for c in (status.get("data") or {}).get("clients") or []
                       if now - float(c.get("client_last_conn_time") or now) < SILENT_S)
    missing = [s for s in sites if s not in connected]
    if missing:
        raise HostError(
            f"the job needs {', '.join(sites)} but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not connected to the server "
            f"(connected: {', '.join(connected) or 'none'}); nothing was submitted. Start "
            f"{'it' if len(missing) == 1 else 'them'} (one host: docker compose up -d {' '.join(missing)}; another "
            "host: docker compose up -d in its bundle) and check its log (docker compose logs SITE), "
            "or generate the job for the connected sites only (scripts/make_job.py --sites ...)")


def submit(job_dir: str, args) -> str:
    envelope = admin_nvflare("job", "submit", "-j", job_dir, env_file=args.env_file, service=args.admin, check=False)
    if envelope.get("status") == "ok":
        return envelope["data"]["job_id"]
    message = f"{envelope.get('message')} {envelope.get('hint') or ''}".strip()
    if "not authorized" in message.lower():
        # NVFlare wraps the reason in "Authentication failed ... Check startup kit credentials": the kit is fine.
        reason = re.search(r"user '[^']+' is not authorized for '[^']+'", message)
        # The job brings its own code (app/custom): NVFlare's default policy lets only these roles submit it.
        raise HostError(
            f"the server refused the job: {reason.group(0) if reason else message}. The admin of console '{args.admin}' may not submit jobs "
            "that bring their own code (app/custom): NVFlare allows that to the project_admin and lead roles "
            "only (role: in project.yml). Submit through such an admin's console (--admin SERVICE; "
            "docker compose ps lists admin, admin-2, ...); nothing was submitted")
    raise HostError(f"nvflare job submit: {message}; nothing was submitted")


def server_log(job_id: str, args) -> list:
    """The job's server log messages so far (log.json lines, via `nvflare job logs`)."""
    logs = admin_nvflare("job", "logs", job_id, "--sites", "server", "--tail", "100000",
                         env_file=args.env_file, service=args.admin, check=False)
    raw = (logs.get("data") or {}).get("logs", {}).get("server", "") or ""
    messages = []
    for line in raw.splitlines():
        try:
            messages.append(json.loads(line).get("message", ""))
        except (json.JSONDecodeError, AttributeError):
            messages.append(line)
    return messages


def round_events(messages: list) -> list:
    """[(round, None) when a round starts, (round, site) when a site's result arrives], in log order."""
    events, rnd = [], None
    for msg in messages:
        if m := ROUND_RE.search(msg):
            rnd = int(m.group(1))
            events.append((rnd, None))
        elif (m := RESULT_RE.search(msg)) and rnd is not None:
            events.append((rnd, m.group(1)))
    return events


def live_jobs(args) -> set:
    """Jobs the server runs now (`nvflare system status`), as opposed to what its job store says."""
    status = admin_nvflare("system", "status", env_file=args.env_file, service=args.admin, check=False)
    return {j.get("job_id") for j in ((status.get("data") or {}).get("jobs") or [])}


def follow(job_id: str, args) -> str:
    """Print each round and each site's result as they happen; return the final status.

    A server restart ends the job's process but NVFlare 2.9 keeps it RUNNING in its store for good: a job the
    server no longer runs for GONE_POLLS polls in a row is reported as interrupted, with the resume command."""
    deadline = time.monotonic() + args.timeout
    printed, last_status, gone, down_since = set(), None, 0, None
    while True:
        try:
            meta = admin_nvflare("job", "meta", job_id, env_file=args.env_file, service=args.admin)["data"]
            live = live_jobs(args) if meta.get("status") == "RUNNING" else set()
        except HostError as e:  # the server is restarting, or gone
            if down_since is None:
                down_since = time.monotonic()
                print(f"[{time.strftime('%H:%M:%S')}] server not answering, retrying for up to "
                      f"{args.server_grace:.0f}s ...", flush=True)
            if time.monotonic() - down_since > args.server_grace:
                raise JobInterrupted(
                    f"the server has not answered for {args.server_grace:.0f}s ({e}); once it is back "
                    f"(docker compose up -d server), continue the job from its last saved round: "
                    f"python3 scripts/submit_job.py --resume {job_id}")
            time.sleep(args.interval)
            continue
        down_since = None
        status = meta.get("status", "?")
        if status != last_status:
            print(f"[{time.strftime('%H:%M:%S')}] job {job_id}: {status}", flush=True)
            last_status = status
        for event in round_events(server_log(job_id, args)):
            if event not in printed:
                printed.add(event)
                rnd, site = event
                what = f"round {rnd + 1} started" if site is None else f"  round {rnd + 1}: result from {site}"
                print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)
        if status.startswith(FINISHED):
            return status
        gone = gone + 1 if status == "RUNNING" and job_id not in live else 0
        if gone >= GONE_POLLS:
            raise JobInterrupted(
                f"job {job_id} is no longer running on the server (it restarted; NVFlare does not restart a job, "
                f"and its store keeps saying RUNNING). Continue it from its last saved round: "
                f"python3 scripts/submit_job.py --resume {job_id}")
        if time.monotonic() > deadline:
            raise HostError(
                f"job {job_id} is still {status} after {args.timeout:.0f}s; it keeps running. Follow it with "
                f"`docker compose exec {args.admin} nvflare job monitor {job_id} --startup-kit {ADMIN_KIT}` "
                f"or stop it with `... nvflare job abort {job_id} ...`"
            )
        time.sleep(args.interval)


def download(job_id: str, args, failed: bool = False) -> tuple:
    """Fetch the job into results/<job_id>; for a failed job also the sites' error logs. Returns (folder, the
    error lines job_errors.py found)."""
    inside = "/home/fl/downloads"
    admin_nvflare("job", "download", job_id, "-o", inside, "--force", env_file=args.env_file, service=args.admin)
    errors = []
    if failed:  # before the copy, so that site_errors/ lands in results/<job_id> with the rest
        run = compose("exec", "-T", args.admin, "python3", "-m", "fl_deploy.job_errors", job_id,
                      "--startup-kit", ADMIN_KIT, "-o", f"{inside}/{job_id}", check=False, env_file=args.env_file)
        errors = (run.stdout or run.stderr).strip().splitlines()
    # HF-format global model, metrics.csv and plots, made where torch and the model's tokenizer are at hand.
    export = compose("exec", "-T", args.admin, "python3", "/src/scripts/export_results.py", f"{inside}/{job_id}",
                     check=False, env_file=args.env_file)
    if export.returncode != 0:
        print(f"warning: results exported without the HF model / plots: {(export.stderr or '').strip()}")
    os.makedirs(args.results, exist_ok=True)
    dest = os.path.join(args.results, job_id)
    if os.path.exists(dest):
        raise HostError(f"{dest} already exists; move it away to download again")
    compose("cp", f"{args.admin}:{inside}/{job_id}", dest, env_file=args.env_file)
    return dest, errors


def summarize(dest: str):
    ws = os.path.join(dest, "workspace")
    metrics = os.path.join(ws, "metrics", "round_metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            rounds = [json.loads(line) for line in f if line.strip()]
        for r in rounds:
            agg = {m["name"]: m["value"] for m in r.get("aggregated_metrics", [])}
            shown = ", ".join(f"{k}={agg[k]:.4f}" for k in ("train_loss", "global_eval_loss", "eval_loss") if k in agg)
            print(f"  round {r['round'] + 1}: {shown}")
    print(f"results:      {os.path.relpath(dest)}")
    print(f"global model: {os.path.relpath(os.path.join(dest, 'global_model'))} "
          f"(AutoModelForCausalLM.from_pretrained; raw: workspace/app_server/FL_global_model.pt)")
    print(f"metrics:      {os.path.relpath(os.path.join(dest, 'metrics.csv'))}, plots in "
          f"{os.path.relpath(os.path.join(dest, 'plots'))}/")
    print(f"tensorboard:  docker compose --profile tensorboard up -d tensorboard  (http://localhost:6006)")


def print_timeline(job_id: str, started: float, args):
    from fl_deploy import timeline

    def nvflare(*cli):
        return admin_nvflare(*cli, env_file=args.env_file, service=args.admin, check=False)

    def site_log(site, job_id):  # a site running on this host: its job log in its container
        run = compose("exec", "-T", site, "cat", f"/workspace/{job_id}/log.txt", check=False, env_file=args.env_file)
        return run.stdout if run.returncode == 0 else None

    print(timeline.report(job_id, timeline.collect(job_id, nvflare, started, site_log=site_log)), flush=True)


def main(argv=None) -> int:
    started = time.time()
    args = parse_args(argv)
    try:
        check_docker()
        require_admin(args.env_file, args.admin)
        # The server's site list comes in while the job is generated and checked: one admin round trip (3-5 s)
        # off the way to the first training step (docs/benchmarks.md, "Submit -> first training step").
        with ThreadPoolExecutor(1) as pool:
            status = pool.submit(site_status, args)
            job_dir, report = stage_job(args)
            require_sites(check_staged_job(report), args, status.result())
        job_id = submit(job_dir, args)
        print(f"submitted job {job_id}", flush=True)
        status = follow(job_id, args)
        dest, errors = download(job_id, args, failed=status != "FINISHED:COMPLETED")
        summarize(dest)
        if args.timeline:
            print_timeline(job_id, started, args)
    except JobInterrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if status != "FINISHED:COMPLETED":
        print(f"error: job {job_id} ended {status}; what the server and the sites reported:", file=sys.stderr)
        for line in errors or ["(nothing: see the logs)"]:
            print(f"  {line}", file=sys.stderr)
        print(f"logs: {os.path.relpath(dest)}/workspace/ (server), {os.path.relpath(dest)}/site_errors/ (sites), "
              "docker compose logs SITE", file=sys.stderr)
        return 1
    return 0
