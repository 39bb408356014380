"""Submit the FedAvg job through the admin console, follow it live, and fetch its results.

    python3 scripts/submit_job.py                      # job settings from .env (FL_MODEL, FL_ROUNDS, ...)
    python3 scripts/submit_job.py --rounds 5 --max_steps 100    # any make_job.py flag is passed on
    python3 scripts/submit_job.py --logs               # the sites' job logs too, interleaved with the progress
    python3 scripts/submit_job.py --json               # the same events as JSON lines (automation)
    python3 scripts/submit_job.py --job-folder jobs/gpt2-fedavg-stream   # submit a folder as it is
    python3 scripts/submit_job.py --resume JOB_ID      # go on from the last saved round of a job that ended early

Runs on the host with only Docker and Python 3: the job is generated from app_code/ inside the admin container
(scripts/make_job.py, given every FL_* variable of .env and the environment, then the flags this script does not
know itself: `docker compose exec admin python3 /src/scripts/make_job.py --help` lists them), submitted with
`nvflare job submit` and the admin's startup kit, and followed by one long-lived admin session in that container
(fl_deploy/admin/follow.py) that streams the server's events as they happen, each with the server's time: every
round's start, each site's result, the round's end with its duration and the job's ETA. The results land in
results/<job_id>/ (with each site's job log). One training job at a time: a job whose sites another job holds is
refused, naming that job (--allow-concurrent submits it anyway). A job NVFlare cannot schedule is reported with
the scheduler's reason as soon as NVFlare records it, and aborted. A job that ends abnormally is summarised by
its cause, as far as the server and Docker know (fl_deploy/diagnose.py), with the next step.

Its steps, one module each: preflight (the job complete, its sites connected and free), sizing (will it fit the
server), staging (generate the job, or stream a --job-folder in: job_folder, into the admin console; submit it),
following (the job's events as they happen; reattach: --follow JOB_ID), download (results/<job_id> with the
export), summary (what the results hold, --timeline), abnormal_end (cause and next step).
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from fl_deploy import ROOT, disk_usage
from fl_deploy.check_job import check_job
from fl_deploy.host import ADMIN_SERVICE, AdminConsole, HostError, check_docker, setting
from fl_deploy.submit_job.abnormal_end import abnormal_end
from fl_deploy.submit_job.download import download
from fl_deploy.submit_job.following import JobInterrupted, NotScheduled, Reporter, follow
from fl_deploy.submit_job.preflight import (check_staged_job, require_free_sites, require_sites, require_valid_kits,
                                           site_status)
from fl_deploy.submit_job import reattach, sizing, staging
from fl_deploy.submit_job.staging import stage_job, submit
from fl_deploy.submit_job.summary import print_timeline, summarize

COMPLETED = "FINISHED:COMPLETED"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="submit_job.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", default=None, help="compose .env file (default: ./.env)")
    p.add_argument("--job-folder", help="submit this job folder instead of generating one from app_code/")
    p.add_argument("--resume", metavar="JOB_ID",
                   help="resubmit JOB_ID from its last persisted global model (same settings as now in .env)")
    p.add_argument("--follow", metavar="JOB_ID", help="re-attach to JOB_ID (after Ctrl-C, a dropped session, "
                   "--timeout): its rounds so far, then live, then download and summary (submit_job/reattach.py)")
    p.add_argument("--timeout", type=float, default=float(setting("FL_JOB_TIMEOUT", "7200")),
                   help="seconds to wait for the job (it keeps running after a timeout)")
    p.add_argument("--logs", action="store_true",
                   help="show each site's job log (streamed by the site while the job runs) with the progress")
    p.add_argument("--json", action="store_true",
                   help="print the job's events as JSON lines on stdout (fl_deploy/admin/follow.py lists them); other "
                        "messages go to stderr")
    p.add_argument("--allow-concurrent", action="store_true",
                   help="submit even while another job holds the same sites: the server queues it until that job "
                        "ends (it runs max_jobs jobs at once: OneJobAtATime in project.yml, 1 by default; with more, "
                        "the jobs share the sites' containers and GPUs)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between the follower's reads of the server")
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
    reattach.check_args(p, args)
    if args.job_folder and staging.host_can_read(args.job_folder):  # else the admin container checks the staged copy
        _, problems = check_job(args.job_folder)
        if problems:
            p.error(f"{args.job_folder} is not a complete job folder: {'; '.join(problems)}")
    return args


def main(argv=None) -> int:
    started = time.time()
    args = parse_args(argv)
    report = Reporter(args.json, args.logs)
    if args.json:  # stdout carries the events only; everything else this process prints goes to stderr
        sys.stdout = sys.stderr
    console = AdminConsole(service=args.admin, env_file=args.env_file)
    job_id = first_round = prediction = None
    try:
        check_docker()
        console.require()
        if args.follow:  # a job submitted before: no staging, no submission (submit_job/reattach.py)
            job_id = args.follow
            sites, since = reattach.attach(job_id, console)
        else:
            # The server's site list comes in while the job is generated and checked: one admin round trip (3-5 s)
            # off the way to the first training step (docs/benchmarks/first-step.md).
            with ThreadPoolExecutor(1) as pool:
                connected = pool.submit(site_status, console)
                job_dir, checked, first_round = stage_job(console, args.job_folder, args.job_flags, args.resume)
            try:
                needs = check_staged_job(checked)
                sites = require_sites(needs, console, connected.result())
                if not args.allow_concurrent:
                    require_free_sites(sites, console)
                prediction = sizing.check(console, sites, args.job_flags, args.job_folder)  # refuses what won't fit
                report.predicted_exchange_s = prediction and prediction.round_exchange_s
                require_valid_kits(sites, needs["rounds"], report.predicted_exchange_s)  # no kit ends before the job
                since = time.time()
                job_id = submit(job_dir, console)
            finally:  # submitted (the server holds the job) or refused: the staged copy has served
                disk_usage.remove_in_admin(job_dir, console.service, console.env_file)
            report.say(f"submitted job {job_id}")
            report.event({"event": "submitted", "time": time.time(), "job_id": job_id})
        status = follow(job_id, console, report, args.timeout, args.interval, args.server_grace, args.logs)
        resumed = (args.resume, first_round) if args.resume else None
        try:
            dest, errors = download(job_id, console, args.results, sites, failed=status != COMPLETED, resumed=resumed)
        except HostError as e:
            if status == COMPLETED:
                raise
            dest, errors = None, [str(e)]
        sizing.record(dest, prediction)
        if status != COMPLETED:
            abnormal_end(job_id, status, dest, errors, since, console)
            if dest:
                summarize(dest, report)
            return 1
        summarize(dest, report)
        if args.timeline:
            print_timeline(job_id, started, console)
        report.event({"event": "results", "time": time.time(), "job_id": job_id, "path": os.path.relpath(dest)})
    except (JobInterrupted, NotScheduled) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if job_id is None:
            raise
        print(f"\nerror: {reattach.how_to_reattach(job_id, console.service, 'interrupted (Ctrl-C or SIGTERM)')}", file=sys.stderr)
        return 130
    return 0
