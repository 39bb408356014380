"""Following a submitted job from the host: fl_deploy/admin/follow.py runs in the admin container (one FLARE API
session) and prints the job's events as JSON lines, each with the server's time; here they become what the user
sees (Reporter: human lines, or with --json the events themselves) and the job's end (its status, or
NotScheduled / JobInterrupted with the next step). Host side, standard library only."""

import json
import subprocess
import sys
import threading
import time

from fl_deploy import ROOT
from fl_deploy.host import AdminConsole, HostError
from fl_deploy.submit_job import reattach


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
        self.predicted_exchange_s = None  # sizing.check's prediction, shown beside round 1

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
            if e["round"] == 1 and self.predicted_exchange_s is not None:
                text += f" (exchange predicted {self.predicted_exchange_s:.1f} s of it; results/<job_id>/sizing.json)"
        elif kind == "server_log":
            text = f"server {e['level']}: {e['message']}"
        elif kind == "site_log":
            if not self.logs:
                return None
            text = f"{e['site']} | {e['level'] + ' ' if e.get('level') else ''}{e['message']}"
        elif kind == "not_scheduled":
            text = f"not scheduled: {e['reason']}"
        elif kind == "queued":
            jobs = ", ".join(f"{j['job_id']} ({j.get('name') or '?'})" for j in e["behind"])
            text = (f"waiting for job{'s' if len(e['behind']) > 1 else ''} {jobs} to finish: the server runs one "
                    "training job at a time; this one starts by itself after")
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


def follow(job_id: str, console: AdminConsole, report: Reporter, timeout_s: float, interval_s: float = 1.0,
           server_grace_s: float = 300.0, logs: bool = False) -> str:
    """Stream the job's events from fl_deploy.admin.follow in the admin container until the job ends, at most
    ``timeout_s`` seconds; return its final status. A job NVFlare cannot schedule is aborted (NotScheduled); a job
    the server lost is reported interrupted (JobInterrupted), with the resume command."""
    cmd = ["docker", "compose", "--project-directory", ROOT,
           *(["--env-file", console.env_file] if console.env_file else []),
           "exec", "-T", console.service, "python3", "-m", "fl_deploy.admin.follow", job_id,
           "--startup-kit", console.kit, "--interval", str(interval_s), "--server-grace", str(server_grace_s),
           *(["--logs"] if logs else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    stderr = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    timer = threading.Timer(timeout_s, proc.terminate)
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
                console.nvflare("job", "abort", job_id, "--force", check=False)
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
        raise HostError(reattach.how_to_reattach(job_id, console.service, f"still running after --timeout {timeout_s:g} s"))
    raise HostError(f"the follower of job {job_id} ended (exit {proc.returncode}): "
                    f"{''.join(stderr).strip()[-800:] or 'no output'}; the job keeps running")
