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
(fl_deploy/follow.py) that streams the server's events as they happen, each with the server's time: every
round's start, each site's result, the round's end with its duration and the job's ETA. The results land in
results/<job_id>/ (with each site's job log). One training job at a time: a job whose sites another job holds is
refused, naming that job (--allow-concurrent submits it anyway). A job NVFlare cannot schedule is reported with
the scheduler's reason as soon as NVFlare records it, and aborted. A job that ends abnormally is summarised by
its cause, as far as the server and Docker know (fl_deploy/diagnose.py), with the next step.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fl_deploy import ROOT, diagnose, disk_usage, job_folder, lineage, reattach, site_failure
from fl_deploy.check_job import check_job
from fl_deploy.host import (ADMIN_KIT, ADMIN_SERVICE, HostError, admin_nvflare, check_docker, compose, env_settings,
                            require_admin, setting)

FINISHED = "FINISHED"
COMPLETED = "FINISHED:COMPLETED"
SILENT_S = 45  # a site not heard from for this long is down (sites heartbeat every 10 s)


class JobInterrupted(HostError):
    """The job stopped running without finishing (server restart): it can be resumed."""


class NotScheduled(HostError):
    """NVFlare could not schedule the job; it was aborted."""


class Reporter:
    """What the user sees: human lines on stdout, or with --json the events as JSON lines on stdout and the human
    lines on stderr."""

    def __init__(self, json_lines: bool = False, logs: bool = False, out=None):
        self.json_lines = json_lines
        self.logs = logs
        self.out = out or sys.stdout
        self.rounds = None

    def say(self, text: str):
        print(text, file=sys.stderr if self.json_lines else self.out, flush=True)

    def event(self, e: dict):
        if self.json_lines:
            if e["event"] != "site_log" or self.logs:
                self.out.write(json.dumps(e) + "\n")
                self.out.flush()
            return
        line = self.human(e)
        if line is not None:
            print(line, file=self.out, flush=True)

    def human(self, e: dict):
        """One line per event, stamped with the event's time (HH:MM:SS.mmm, this host's zone)."""
        t = e.get("time", time.time())
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        kind = e["event"]
        if kind == "round_done" and e.get("rounds"):
            self.rounds = e["rounds"]
        of = f"/{self.rounds}" if self.rounds else ""
        if kind == "status":
            text = f"job {e.get('job_id', '')}: {e['status']}".replace("job : ", "job: ")
        elif kind == "round_started":
            text = f"round {e['round']}{of} started"
        elif kind == "site_result":
            text = f"  round {e['round']}{of}: result from {e['site']} ({e['round_s']:.1f} s into the round)"
        elif kind == "round_done":
            text = f"round {e['round']}{of} done in {e['round_s']:.1f} s"
            if e.get("results") is not None:
                text += f": {e['results']} result{'s' if e['results'] != 1 else ''} aggregated"
            if e.get("eta_s") is not None and e.get("rounds") and e["round"] < e["rounds"]:
                left = e["rounds"] - e["round"]
                text += f"; ETA {duration(e['eta_s'])} ({left} round{'s' if left != 1 else ''} left)"
        elif kind == "server_log":
            text = f"server {e['level']}: {e['message']}"
        elif kind == "site_log":
            if not self.logs:
                return None
            text = f"{e['site']} | {e['level'] + ' ' if e.get('level') else ''}{e['message']}"
        elif kind == "not_scheduled":
            text = f"not scheduled: {e['reason']}"
        elif kind == "server_unreachable":
            text = f"server not answering ({e['error'][:120]}); retrying ..."
        elif kind == "job_end":
            text = f"job {e.get('job_id', '')}: {e['status']}".replace("job : ", "job: ")
        elif kind in ("submitted", "interrupted", "results"):
            return None  # said in words elsewhere
        else:
            text = json.dumps(e)
        return f"[{stamp}] {text}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="submit_job.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", default=None, help="compose .env file (default: ./.env)")
    p.add_argument("--job-folder", help="submit this job folder instead of generating one from app_code/")
    p.add_argument("--resume", metavar="JOB_ID",
                   help="resubmit JOB_ID from its last persisted global model (same settings as now in .env)")
    p.add_argument("--follow", metavar="JOB_ID", help="re-attach to JOB_ID (after Ctrl-C, a dropped session, "
                   "--timeout): its rounds so far, then live, then download and summary (fl_deploy/reattach.py)")
    p.add_argument("--timeout", type=float, default=float(setting("FL_JOB_TIMEOUT", "7200")),
                   help="seconds to wait for the job (it keeps running after a timeout)")
    p.add_argument("--logs", action="store_true",
                   help="show each site's job log (streamed by the site while the job runs) with the progress")
    p.add_argument("--json", action="store_true",
                   help="print the job's events as JSON lines on stdout (fl_deploy/follow.py lists them); other "
                        "messages go to stderr")
    p.add_argument("--allow-concurrent", action="store_true",
                   help="submit even while another job holds the same sites (they then share containers and GPUs)")
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
    if args.job_folder and host_can_read(args.job_folder):  # else the admin container checks the staged copy
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
    args.resume_start = start + 1  # the first round (1-based) the new job runs: lineage.py adds the ones before
    print(f"resuming job {job_id}: rounds 1..{start} are kept (its checkpoint after round {start})")
    return ["--initial_ckpt", progress["checkpoint"], "--start_round", str(start)]


def host_can_read(folder: str) -> bool:
    """Whether this user may read every file and folder of ``folder`` (a job exported by someone else, or by
    NVFlare's exporter as 0700, may not be)."""
    if not os.access(folder, os.R_OK | os.X_OK):
        return False
    errors = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=errors.append):
        for name in dirnames:
            if not os.access(os.path.join(dirpath, name), os.R_OK | os.X_OK):
                return False
        for name in filenames:
            if not os.access(os.path.join(dirpath, name), os.R_OK):
                return False
    return not errors


def stage_job(args) -> tuple:
    """Put the job folder into the admin container and check it there, in one `docker compose exec` (one round trip
    less before the submission; docs/benchmarks.md, "Submit -> first training step"): the folder generated by
    make_job.py (or the --job-folder copied in, whatever its owner and modes: NVFlare's exporter
    writes 0700), then check_job.py. Returns (its path there, the check's report)."""
    dest = f"{disk_usage.ADMIN_STAGED}/{time.strftime('%Y%m%d-%H%M%S')}"  # the admin's volume, removed once submitted
    check = shlex.join(["python3", "-m", "fl_deploy.check_job", dest, "--imports", "--json"])
    if args.job_folder:
        run = job_folder.stage(args.job_folder, host_can_read(args.job_folder), args.admin, dest, check,
                               env_file=args.env_file)  # streamed, refused above its size limit
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
    return {k: report.get(k) for k in ("sites", "all_sites", "min_sites")}


def site_status(args) -> dict:
    """`nvflare system status`: the sites the server lists, with when it last heard from each."""
    return admin_nvflare("system", "status", env_file=args.env_file, service=args.admin)


def require_sites(needs: dict, args, status: dict = None) -> list:
    """Refuse a job the connected sites cannot run: a site it names is not connected (NVFlare would hold it,
    unscheduled), or, deployed to every connected site (@ALL), fewer than its min_clients are connected or one is
    connected that its client's site list leaves without a shard. Returns the sites the job will run on. status:
    site_status() fetched already (main() asks for it while the job is generated), else fetched here."""
    sites = list(needs.get("sites") or [])
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
    if not needs.get("all_sites"):
        return sites
    extra = [s for s in connected if sites and s not in sites]
    if extra:
        raise HostError(
            f"the job deploys to every connected site (@ALL) but its client takes the site list {','.join(sites)} "
            f"(--sites in its task_script_args), so {', '.join(extra)} would get no data shard; nothing was "
            f"submitted. Generate the job for the connected sites (--sites {','.join(connected)}) or stop "
            f"{' '.join(extra)} (docker compose stop {' '.join(extra)})")
    need = max(int(needs.get("min_sites") or 0), 1)
    if len(connected) < need:
        raise HostError(
            f"the job deploys to every connected site (@ALL) and needs at least {need} (min_clients in its "
            f"meta.json) but {len(connected)} {'is' if len(connected) == 1 else 'are'} connected "
            f"({', '.join(connected) or 'none'}); nothing was submitted. Start more sites (docker compose up -d "
            "SITE) or lower min_clients")
    print(f"the job deploys to every connected site (@ALL): {', '.join(connected)}", flush=True)
    return connected


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


def live_jobs(args) -> set:
    """Jobs the server runs now (`nvflare system status`), as opposed to what its job store says."""
    status = admin_nvflare("system", "status", env_file=args.env_file, service=args.admin, check=False)
    return {j.get("job_id") for j in ((status.get("data") or {}).get("jobs") or [])}


def require_free_sites(sites: list, args):
    """One training job at a time on the same sites: refuse while another job holds any of them."""
    run = compose("exec", "-T", args.admin, "python3", "-m", "fl_deploy.job_queue", "--startup-kit", ADMIN_KIT,
                  "--sites", ",".join(sites), check=False, env_file=args.env_file)
    try:
        holders = json.loads(run.stdout.strip().splitlines()[-1])["holders"]
    except (IndexError, KeyError, json.JSONDecodeError):
        raise HostError(f"could not ask the server which jobs run: {(run.stderr or run.stdout).strip()[-500:]}")
    if holders:
        h = holders[0]
        others = f" (and {len(holders) - 1} more job{'s' if len(holders) > 2 else ''})" if len(holders) > 1 else ""
        raise HostError(
            f"job {h['job_id']} ({h['name']}, {h['status']}, submitted {h['submit_time']}) holds "
            f"{', '.join(h['sites'])}{others}; nothing was submitted. Wait for it to finish, abort it "
            f"(docker compose exec {args.admin} nvflare job abort {h['job_id']} --startup-kit {ADMIN_KIT}), or "
            "pass --allow-concurrent to run both on the same sites (they then share the containers and GPUs)")


def follow(job_id: str, args, report: Reporter) -> str:
    """Stream the job's events from fl_deploy.follow in the admin container until the job ends; return its
    final status. A job NVFlare cannot schedule is aborted (NotScheduled); a job the server lost is reported
    interrupted (JobInterrupted), with the resume command."""
    cmd = ["docker", "compose", "--project-directory", ROOT, *(["--env-file", args.env_file] if args.env_file else []),
           "exec", "-T", args.admin, "python3", "-m", "fl_deploy.follow", job_id, "--startup-kit", ADMIN_KIT,
           "--interval", str(args.interval), "--server-grace", str(args.server_grace), *(["--logs"] if args.logs else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    stderr = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    timer = threading.Timer(args.timeout, proc.terminate)
    timer.start()
    status = end = None
    try:
        for line in proc.stdout:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if e["event"] in ("status", "job_end"):
                e["job_id"] = job_id
            report.event(e)
            if e["event"] == "not_scheduled":
                admin_nvflare("job", "abort", job_id, "--force", env_file=args.env_file, service=args.admin,
                              check=False)
                raise NotScheduled(
                    f"NVFlare cannot schedule job {job_id}: {e['reason']}; the job was aborted, nothing ran. A job's "
                    "resource_spec must fit what the sites declare to NVFlare (the resource_manager of each kit's "
                    "local/resources.json); the jobs of scripts/make_job.py ask for none")
            if e["event"] == "job_end":
                status = e["status"]
            if e["event"] == "interrupted":
                end = e["reason"]
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
    if status:
        return status
    if end:
        raise JobInterrupted(
            f"job {job_id} stopped: {end}. Once the server is back (docker compose up -d server), continue the "
            f"job from its last saved round: python3 scripts/submit_job.py --resume {job_id}")
    if not timer.is_alive() and proc.returncode in (-15, 143):
        raise HostError(reattach.how_to_reattach(job_id, args.admin,
                                                 f"still running after --timeout {args.timeout:g} s"))
    raise HostError(f"the follower of job {job_id} ended (exit {proc.returncode}): "
                    f"{''.join(stderr).strip()[-800:] or 'no output'}; the job keeps running")


def download(job_id: str, args, failed: bool = False) -> tuple:
    """Fetch the job into results/<job_id>, with each site's job log (site_logs/) and, for a failed job, the
    sites' error logs (site_errors/). Returns (folder, the error lines job_errors.py found)."""
    inside = disk_usage.ADMIN_DOWNLOADS  # the admin's volume, not its writable layer; removed once on the host
    got = admin_nvflare("job", "download", job_id, "-o", inside, "--force", env_file=args.env_file,
                        service=args.admin, check=False)
    if got.get("status") != "ok":
        raise HostError(f"could not download job {job_id}: {got.get('message')} {got.get('hint') or ''}".strip())
    job_dir = disk_usage.download_path(got, inside, job_id)  # NVFlare's: <job_id>__N when <job_id> was taken
    # Before the copy, so that site_logs/ and site_errors/ land in results/<job_id> with the rest.
    run = compose("exec", "-T", args.admin, "python3", "-m", "fl_deploy.job_errors", job_id,
                  "--startup-kit", ADMIN_KIT, "-o", job_dir, "--sites", ",".join(args.sites or []),
                  check=False, env_file=args.env_file)
    errors = (run.stdout or run.stderr).strip().splitlines() if failed else []
    if args.resume:  # one training run: the rounds of the jobs this one continues, next to it before the export
        add_earlier_rounds(job_id, job_dir, args)
    # HF-format global model, metrics.csv and plots, made where torch and the model's tokenizer are at hand.
    export = compose("exec", "-T", args.admin, "python3", "/src/scripts/export_results.py", job_dir,
                     check=False, env_file=args.env_file)
    if export.returncode != 0 and not failed:
        last = (export.stderr or "").strip().splitlines()[-1:]
        print(f"warning: results exported without the HF model / plots: {' '.join(last)}", file=sys.stderr)
    os.makedirs(args.results, exist_ok=True)
    dest = os.path.join(args.results, job_id)
    if os.path.exists(dest):
        raise HostError(f"{dest} already exists; move it away to download again")
    compose("cp", f"{args.admin}:{job_dir}", dest, env_file=args.env_file)
    disk_usage.remove_in_admin(job_dir, args.admin, args.env_file, job_id=job_id)
    return dest, errors


def add_earlier_rounds(job_id: str, inside: str, args):
    """fl_deploy/lineage.py on the host (it reads results/ and the server volume), its files then put next to the
    downloaded job in the admin container."""
    import tempfile

    with tempfile.TemporaryDirectory() as staging:
        lineage.add_earlier_rounds(staging, args.resume, args.resume_start, args.results, env_file=args.env_file)
        tar = subprocess.run(["tar", "-C", staging, "-c", "."], capture_output=True, check=True).stdout
    compose("exec", "-T", args.admin, "tar", "-x", "-C", inside, input=tar, env_file=args.env_file)


def summarize(dest: str, report: Reporter):
    """What the result holds, naming only what exists."""
    ws = os.path.join(dest, "workspace")
    rounds = read_run_rounds(dest)
    for r in rounds:
        agg = {m["name"]: m["value"] for m in r.get("aggregated_metrics", [])}
        shown = ", ".join(f"{k}={agg[k]:.4f}" for k in ("train_loss", "global_eval_loss", "eval_loss") if k in agg)
        report.say(f"  round {r['round'] + 1}: {shown}")
    rel = os.path.relpath
    report.say(f"results:      {rel(dest)}")
    if os.path.isdir(os.path.join(dest, "global_model")):
        report.say(f"global model: {rel(os.path.join(dest, 'global_model'))} "
                   f"(AutoModelForCausalLM.from_pretrained; raw: workspace/app_server/FL_global_model.pt)")
    elif os.path.isfile(os.path.join(ws, "app_server", "FL_global_model.pt")):
        report.say(f"global model: {rel(os.path.join(ws, 'app_server', 'FL_global_model.pt'))} (raw state dict)")
    plots = sorted(os.listdir(os.path.join(dest, "plots"))) if os.path.isdir(os.path.join(dest, "plots")) else []
    if os.path.isfile(os.path.join(dest, "metrics.csv")):
        report.say(f"metrics:      {rel(os.path.join(dest, 'metrics.csv'))}"
                   + (f", {rel(os.path.join(dest, 'system_metrics.csv'))}"
                      if os.path.isfile(os.path.join(dest, "system_metrics.csv")) else ""))
    if plots:
        report.say(f"plots:        {rel(os.path.join(dest, 'plots'))}/ ({', '.join(plots)})")
    site_logs = os.path.join(dest, "site_logs")
    if os.path.isdir(site_logs) and os.listdir(site_logs):
        report.say(f"site logs:    {rel(site_logs)}/ ({', '.join(sorted(os.listdir(site_logs)))}); the server's: "
                   f"{rel(os.path.join(ws, 'log.txt'))}")
    if os.path.isdir(os.path.join(ws, "tb_events")):
        report.say("tensorboard:  docker compose --profile tensorboard up -d tensorboard  (http://127.0.0.1:6006)")


def read_run_rounds(dest: str) -> list:
    """Round records of the whole run: earlier rounds of a resumed run (lineage.py), then the job's own."""
    rounds = {r["round"]: r for r in lineage.read_records(os.path.join(dest, lineage.EARLIER))}
    rounds.update({r["round"]: r for r in lineage.read_records(os.path.join(dest, "workspace", lineage.ROUND_METRICS))})
    return [rounds[k] for k in sorted(rounds)]


def abnormal_end(job_id: str, status: str, dest, errors: list, since: float, args, report: Reporter):
    """Why the job ended, as far as the server and Docker know, then what the sites and the server reported,
    then the next step."""
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    facts = diagnose.describe(diagnose.job_process_exit(job_id, args.env_file),
                              diagnose.docker_events(diagnose.project_name(args.env_file), since, time.time()),
                              diagnose.job_runner_finished(os.path.join(dest, "workspace", "log.txt")) if dest else None)
    # A site's job process ended it (another host too); the server's volume filled.
    facts = site_failure.facts(job_id, dest, args.env_file) + disk_usage.facts(dest, args.env_file) + facts
    say(f"error: job {job_id} ended {status}.")
    for fact in facts or ["neither the server's job process nor Docker recorded a crash, a kill or an "
                          "out-of-memory kill: the job itself failed, see what it reported below"]:
        say(f"  cause: {fact}")
    reported = [line for line in errors if "no errors reported" not in line]
    if reported:
        say("  what the server and the sites reported:")
        for line in reported:  # job_errors.py keeps at most 8 per site
            say(f"    {line}")
    say(f"  next: {diagnose.next_step(job_id, diagnose.saved_round(job_id, args.env_file))}")
    if dest:
        logs = [p for p in ("site_logs", "site_errors") if os.path.isdir(os.path.join(dest, p))]
        say(f"  logs: {os.path.relpath(dest)}/workspace/log.txt (server)"
            + "".join(f", {os.path.relpath(dest)}/{p}/" for p in logs) + "; docker compose logs SERVICE")


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
    report = Reporter(args.json, args.logs)
    if args.json:  # stdout carries the events only; everything else this process prints goes to stderr
        sys.stdout = sys.stderr
    args.sites, args.resume_start, job_id = [], None, None
    try:
        check_docker()
        require_admin(args.env_file, args.admin)
        if args.follow:  # a job submitted before: no staging, no submission (fl_deploy/reattach.py)
            job_id, since = reattach.attach(args)
        else:
            # The server's site list comes in while the job is generated and checked: one admin round trip (3-5 s)
            # off the way to the first training step (docs/benchmarks.md, "Submit -> first training step").
            with ThreadPoolExecutor(1) as pool:
                connected = pool.submit(site_status, args)
                job_dir, checked = stage_job(args)
            try:
                args.sites = require_sites(check_staged_job(checked), args, connected.result())
                if not args.allow_concurrent:
                    require_free_sites(args.sites, args)
                since = time.time()
                job_id = submit(job_dir, args)
            finally:  # submitted (the server holds the job) or refused: the staged copy has served
                disk_usage.remove_in_admin(job_dir, args.admin, args.env_file)
            report.say(f"submitted job {job_id}")
            report.event({"event": "submitted", "time": time.time(), "job_id": job_id})
        status = follow(job_id, args, report)
        try:
            dest, errors = download(job_id, args, failed=status != COMPLETED)
        except HostError as e:
            if status == COMPLETED:
                raise
            dest, errors = None, [str(e)]
        if status != COMPLETED:
            abnormal_end(job_id, status, dest, errors, since, args, report)
            if dest:
                summarize(dest, report)
            return 1
        summarize(dest, report)
        if args.timeline:
            print_timeline(job_id, started, args)
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
        print(f"\nerror: {reattach.how_to_reattach(job_id, args.admin, 'interrupted (Ctrl-C)')}", file=sys.stderr)
        return 130
    return 0
