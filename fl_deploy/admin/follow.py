"""Follow one job from an admin console: what the server records, as it records it, one JSON object per line.

    python3 -m fl_deploy.admin.follow JOB_ID --startup-kit KIT [--logs]
    docker compose exec -T admin python3 -m fl_deploy.admin.follow JOB_ID --logs

One FLARE API session (nvflare.fuel.flare_api) for the whole job, instead of a CLI process per question: every
--interval seconds it reads the job's meta and the server's job log (log.json, stamped by NVFlare in
milliseconds) and, with --logs, each site's job log, which the sites stream to the server while the job runs
(the kits' SiteLogStreamer, configured by provisioning: fl_deploy/provision_builders.py). What is new goes to
stdout as JSON lines (scripts/submit_job.py prints them; `submit_job.py --json` passes them through):

  {"event": "status", "time": T, "status": "RUNNING"}
  {"event": "not_scheduled", "time": T, "reason": "..."}   a failed scheduling attempt (job meta schedule_history)
  {"event": "queued", "time": T, "behind": [{"job_id": "...", "name": "..."}]}   SUBMITTED while these run
  {"event": "round_started", "time": T, "round": 1}
  {"event": "site_result", "time": T, "round": 1, "site": "site-1", "round_s": 8.7}
  {"event": "round_done", "time": T, "round": 1, "rounds": 3, "round_s": 9.5, "results": 2,
   "sites": ["site-1", "site-2"], "eta_s": 19.0}
  {"event": "server_log", "time": T, "level": "WARNING", "logger": "...", "message": "..."}
  {"event": "site_log", "time": T, "site": "site-1", "level": "INFO", "logger": "...", "message": "..."}
  {"event": "server_unreachable", "time": T, "error": "..."}                   once per outage
  {"event": "job_end", "time": T, "status": "FINISHED:COMPLETED"}             last line, exit 0
  {"event": "interrupted", "time": T, "reason": "..."}                         last line, exit 3

T: the server's time of the event (seconds since the epoch) where the server records one: log records and
scheduling attempts (in the server's local time, the admin container's too), the job's start; else the time the
follower saw it. A job the server holds back behind running ones (one job at a time: provision_builders.py's
OneJobAtATime) is "queued" behind them; it starts by itself when they end. Rounds are 1-based;
"rounds" and "eta_s" (the mean round so far times the rounds left) come from the round summary of our server
workflow (app_code/fl_server/round_stats.py); for a job without it, a round ends at NVFlare's "End persist model
on server." and has no ETA. Progress events come in the order of the server's clock; each site's log lines in
that site's order.
"""

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime

from fl_deploy.check_job import job_sites
from fl_deploy.host import ADMIN_KIT

ROUND_STARTED = re.compile(r"Round (\d+) started\.")
SITE_RESULT = re.compile(r"got result from client (\S+) for task: name=train\b")
# app_code/fl_server/round_stats.py writes it (summary_line); the admin container does not import the job's code.
ROUND_SUMMARY = re.compile(r"round (\d+)/(\d+) done in ([\d.]+) s: (\d+) results? aggregated \(([^)]*)\)")
PERSISTED = "End persist model on server."
FINISHED_FEDAVG = "Finished FedAvg."
TEXT_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (\S+) - ([A-Z]+) - (.*)$")
NVFLARE_CONTEXT = re.compile(r"^\[[^\]]*\] - ")
SCHEDULED = "scheduled"
TRUNCATED = "... output truncated"
WARN_LEVELS = ("WARNING", "ERROR", "CRITICAL")
RUNNING, FINISHED = "RUNNING", "FINISHED"
LIVE_CHECK_S = 5.0  # how often a RUNNING job is looked for among the jobs the server runs
GONE_CHECKS = 3  # ... and missing this many times in a row: the server lost it (restart)


def local_time(text: str, fmt: str) -> float:
    """A naive server timestamp (the server's local time) as seconds since the epoch."""
    return datetime.strptime(text, fmt).timestamp()


class NewLines:
    """The lines of a growing text seen for the first time. NVFlare returns a job log whole (its last 5 MiB,
    prefixed by a truncation notice when longer): a whole text goes on after the number of lines already taken,
    a truncated (or shorter) one after the last line taken. A last line without its newline waits."""

    def __init__(self):
        self.count = 0
        self.last = None

    def feed(self, text: str) -> list:
        lines = text.split("\n")[:-1]
        truncated = bool(lines) and lines[0].startswith(TRUNCATED)
        if truncated:
            lines = lines[1:]
        if truncated or len(lines) < self.count:
            found = [i for i, line in enumerate(lines) if line == self.last] if self.last is not None else []
            start = found[-1] + 1 if found else 0
        else:
            start = self.count
        new = lines[start:]
        self.count = len(lines)
        if lines:
            self.last = lines[-1]
        return new


class ServerLog:
    """Events from the server's job log records (log.json), in order."""

    def __init__(self):
        self.round = None
        self.started = {}  # round -> time
        self.durations = []
        self.pending_end = None  # (round, time) of NVFlare's persist message, until our summary confirms it
        self.summarized = set()
        self.warnings = set()

    def records(self, lines: list) -> list:
        events = []
        for line in lines:
            try:
                rec = json.loads(line)
                t = local_time(rec["asctime"], "%Y-%m-%d %H:%M:%S,%f")
            except (ValueError, KeyError, TypeError):
                continue
            events += self.record(t, rec.get("levelname", ""), rec.get("name", ""), str(rec.get("message", "")))
        return events

    def record(self, t: float, level: str, logger: str, message: str) -> list:
        events = []
        if m := ROUND_STARTED.search(message):
            events += self._flush_pending()
            self.round = int(m.group(1)) + 1
            self.started[self.round] = t
            events.append({"event": "round_started", "time": t, "round": self.round})
        elif (m := SITE_RESULT.search(message)) and self.round is not None:
            events.append({"event": "site_result", "time": t, "round": self.round, "site": m.group(1),
                           "round_s": round(t - self.started[self.round], 3)})
        elif m := ROUND_SUMMARY.search(message):
            rnd, total, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3))
            self.pending_end = None
            self.summarized.add(rnd)
            self.durations.append(seconds)
            mean = sum(self.durations) / len(self.durations)
            events.append({"event": "round_done", "time": t, "round": rnd, "rounds": total, "round_s": seconds,
                           "results": int(m.group(4)), "sites": [s for s in m.group(5).split(", ") if s],
                           "eta_s": round(mean * (total - rnd), 1)})
        elif PERSISTED in message and self.round is not None and self.round not in self.summarized:
            self.pending_end = (self.round, t)
        elif FINISHED_FEDAVG in message:
            events += self._flush_pending()
        elif level in WARN_LEVELS:
            text = NVFLARE_CONTEXT.sub("", message.strip()).split("\n")[0][:500]
            if (logger, text) not in self.warnings:
                self.warnings.add((logger, text))
                events.append({"event": "server_log", "time": t, "level": level, "logger": logger,
                               "message": text})
        return events

    def _flush_pending(self) -> list:
        """A round NVFlare saved without our summary line (a job not built on LargeModelFedAvg)."""
        if not self.pending_end:
            return []
        (rnd, t), self.pending_end = self.pending_end, None
        return [{"event": "round_done", "time": t, "round": rnd, "rounds": None,
                 "round_s": round(t - self.started.get(rnd, t), 3), "results": None, "sites": None, "eta_s": None}]


class SiteLog:
    """site_log events from one site's streamed job log (NVFlare's text format, log.txt)."""

    def __init__(self, site: str):
        self.site = site
        self.lines = NewLines()
        self.last_time = None

    def feed(self, text: str) -> list:
        events = []
        for line in self.lines.feed(text):
            if m := TEXT_RECORD.match(line):
                self.last_time = local_time(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                level, logger, message = m.group(3), m.group(2), NVFLARE_CONTEXT.sub("", m.group(4))
            elif line.strip() and self.last_time is not None:  # a traceback or a banner continues the record
                level, logger, message = None, None, line
            else:
                continue
            events.append({"event": "site_log", "time": self.last_time, "site": self.site, "level": level,
                           "logger": logger, "message": message})
        return events


def schedule_events(history: list, seen: int) -> list:
    """not_scheduled events for the schedule_history entries after the first `seen` ("<time>: <result>")."""
    events = []
    for entry in history[seen:]:
        stamp, _, result = str(entry).partition(": ")
        if result.strip() == SCHEDULED:
            continue
        try:
            t = local_time(stamp, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            t = time.time()
        events.append({"event": "not_scheduled", "time": t, "reason": result.strip() or str(entry)})
    return events


def status_time(meta: dict, status: str) -> float:
    if status == RUNNING and meta.get("start_time"):
        try:
            return datetime.fromisoformat(meta["start_time"]).timestamp()
        except ValueError:
            pass
    if status == "SUBMITTED" and isinstance(meta.get("submit_time"), (int, float)):
        return float(meta["submit_time"])
    return time.time()


class Follower:
    def __init__(self, job_id: str, session_factory, logs: bool = False, interval: float = 1.0,
                 server_grace: float = 300.0, out=None):
        self.job_id = job_id
        self.new_session = session_factory
        self.session = None
        self.logs = logs
        self.interval = interval
        self.server_grace = server_grace
        self.out = out or sys.stdout
        self.server_lines = NewLines()
        self.server_log = ServerLog()
        self.sites = {}
        self.status = None
        self.scheduled_seen = 0
        self.last_time = 0.0
        self.down_since = None
        self.gone = 0
        self.next_live_check = 0.0
        self.behind = []

    def emit(self, events: list):
        # One batch in the server's order; never a time before one already printed (clock granularity, sources
        # read one after the other).
        progress = sorted((e for e in events if e["event"] != "site_log"), key=lambda e: e["time"])
        for e in progress + [e for e in events if e["event"] == "site_log"]:
            if e["event"] != "site_log":
                e["time"] = max(e["time"], self.last_time)
                self.last_time = e["time"]
            e["time"] = round(e["time"], 3)
            self.out.write(json.dumps(e) + "\n")
        self.out.flush()

    def poll(self) -> list:
        s = self.session
        meta = s.get_job_meta(self.job_id)
        status = str(meta.get("status", "?"))
        events = []
        history = meta.get("schedule_history") or []
        events += schedule_events(history, self.scheduled_seen)
        self.scheduled_seen = len(history)
        if status != self.status and not status.startswith(FINISHED):  # the end is job_end's
            events.append({"event": "status", "time": status_time(meta, status), "status": status})
        if status == "SUBMITTED" and time.monotonic() >= self.next_live_check:
            self.next_live_check = time.monotonic() + LIVE_CHECK_S
            behind = [{"job_id": j.job_id, "name": s.get_job_meta(j.job_id).get("name")}
                      for j in s.get_system_info().job_info if j.job_id != self.job_id]
            if behind and behind != self.behind:
                events.append({"event": "queued", "time": time.time(), "behind": behind})
            self.behind = behind
        if status == RUNNING or status.startswith(FINISHED):
            events += self.read_logs(meta)
        if status == RUNNING and time.monotonic() >= self.next_live_check:
            self.next_live_check = time.monotonic() + LIVE_CHECK_S
            running = {j.job_id for j in s.get_system_info().job_info}
            self.gone = 0 if self.job_id in running else self.gone + 1
        self.status = status
        return events

    def read_logs(self, meta: dict) -> list:
        text = (self.session.get_job_logs(self.job_id, "server", log_file_name="log.json").get("logs") or {})
        events = self.server_log.records(self.server_lines.feed(text.get("server") or ""))
        if self.logs:
            for site in job_sites(meta) or sorted(c.name for c in self.session.get_system_info().client_info):
                reader = self.sites.setdefault(site, SiteLog(site))
                try:
                    logs = self.session.get_job_logs(self.job_id, site).get("logs") or {}
                except Exception:  # not streamed (yet): the site's job has not started, or streaming is off
                    continue
                events += reader.feed(logs.get(site) or "")
        return events

    def run(self) -> int:
        while True:
            try:
                if self.session is None:
                    self.session = self.new_session()
                events = self.poll()
                self.down_since = None
            except Exception as e:  # the API raises many types; all mean "no answer now"
                self.close()
                now = time.time()
                if self.down_since is None:
                    self.down_since = now
                    self.emit([{"event": "server_unreachable", "time": now, "error": " ".join(str(e).split())[:300]}])
                elif now - self.down_since > self.server_grace:
                    self.emit([{"event": "interrupted", "time": now,
                                "reason": f"the server has not answered for {self.server_grace:.0f} s"}])
                    return 3
                time.sleep(self.interval)
                continue
            if self.status.startswith(FINISHED):
                self.emit(events + [{"event": "job_end", "time": time.time(), "status": self.status}])
                self.close()
                return 0
            self.emit(events)
            if self.gone >= GONE_CHECKS:
                self.emit([{"event": "interrupted", "time": time.time(),
                            "reason": "the server no longer runs the job, while its job store still says RUNNING "
                                      "(NVFlare does not restart a job after a server restart)"}])
                self.close()
                return 3
            time.sleep(self.interval)

    def close(self):
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                pass
            self.session = None


def session_factory(startup_kit: str):
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    with open(os.path.join(startup_kit, "startup", "fed_admin.json")) as f:
        username = json.load(f)["admin"]["username"]
    return lambda: new_secure_session(username, startup_kit, timeout=30.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.admin.follow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id")
    p.add_argument("--startup-kit", default=ADMIN_KIT, help="the admin's startup kit folder (default: %(default)s)")
    p.add_argument("--logs", action="store_true", help="also each site's streamed job log (site_log events)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reads")
    p.add_argument("--server-grace", type=float, default=300.0,
                   help="seconds the server may not answer (restarting) before the job is reported interrupted")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.startup_kit, "startup", "fed_admin.json")):
        p.error(f"{args.startup_kit} is not an admin startup kit (no startup/fed_admin.json)")
    # stdout carries the events only: anything else that prints (the API, C libraries) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    follower = Follower(args.job_id, session_factory(args.startup_kit), logs=args.logs, interval=args.interval,
                        server_grace=args.server_grace, out=out)
    try:
        return follower.run()
    except KeyboardInterrupt:
        follower.close()
        return 130


if __name__ == "__main__":
    sys.exit(main())
