"""Submit -> first training step: where the time goes between a user's submit and the first optimizer step.

    python3 scripts/submit_job.py --timeline        # after the job: the timeline of its start, from the logs

Events, each from where it happens (standard library only: submit_job.py runs on a bare python3):

    submit_job.py started        the host's clock when submit_job.py began (generate, check, submit the job)
    job received by the server   the job's submit_time (`nvflare job meta`)
    job running on the server    the server job process's first log line (`nvflare job logs --sites server`)
    site job process up          each site's job process's first log line (NVFlare streams the sites' job logs
                                 to the server: `nvflare job logs`; else the site's container on this host)
    site data loaded             the client's "shard i/n (or own data), N train rows" line
    site data tokenised          the client's "trainer ready" line (earlier code: its "round 0 received" line)
    site global model received   the client's "round 0 received" line
    site first optimizer step    the first {'loss': ...} line of the site's trainer (logged when step 1 ends)
    round 1 end                  the server's "Round 1 started" (or "Finished FedAvg" for a one-round job)

A site event is the slowest site's (the round waits for all of them). Log times are the participants' local
time; the image runs UTC (utc=False for kits run as local processes).
"""

import json
import re
from datetime import datetime, timezone

from fl_deploy.check_job import job_sites

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
SITE_EVENTS = [  # (label, pattern of the site's job log message), in the order they happen
    ("site job process up", None),
    ("site data loaded", re.compile(r": (shard \d+/\d+|own data), \d+ train rows")),
    ("site data tokenised", re.compile(r": trainer ready")),
    ("site global model received", re.compile(r": round 0 received")),
    ("site first optimizer step", re.compile(r"^\{'loss': ")),
]


def log_time(text: str, utc: bool) -> float:
    """Epoch seconds of an NVFlare log time ('2026-11-30 23:50:21,893')."""
    t = datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")
    return (t.replace(tzinfo=timezone.utc) if utc else t).timestamp()


def log_records(raw: str, utc: bool = True) -> list:
    """[(epoch seconds, message)] from a job log as `nvflare job logs` returns it: log.json lines (asctime,
    message) or log.txt lines ('<time> - <logger> - <level> - <message>')."""
    out = []
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
            out.append((log_time(rec["asctime"], utc), str(rec.get("message", ""))))
            continue
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        m = STAMP.match(line)
        if m:
            out.append((log_time(m.group(1), utc), line.split(" - ", 3)[-1]))
    return out


def site_events(records: list) -> dict:
    """{label: epoch seconds} of SITE_EVENTS found in one site's job log records (first match each)."""
    found = {}
    if records:
        found["site job process up"] = records[0][0]
    for label, pattern in SITE_EVENTS[1:]:
        hit = next((t for t, msg in records if pattern.search(msg)), None)
        if hit is not None:
            found[label] = hit
    if "site data tokenised" not in found and "site global model received" in found:
        found["site data tokenised"] = found["site global model received"]  # code without the "trainer ready" line
    return found


def round_end(records: list) -> float:
    """When the server finished round 1: its "Round 1 started" line, else "Finished FedAvg" (one-round job)."""
    for pattern in (r"Round 1 started", r"Finished FedAvg"):
        hit = next((t for t, msg in records if re.search(pattern, msg)), None)
        if hit is not None:
            return hit
    return None


def events(started: float, meta: dict, logs: dict, utc: bool = True) -> list:
    """[(label, epoch seconds or None)] in order, from submit_job.py's start time, the job's meta (submit_time)
    and {participant: raw job log} with the server's under "server"."""
    server = log_records(logs.get("server", ""), utc)
    sites = job_sites(meta) or [name for name in logs if name != "server"]
    per_site = [site_events(log_records(logs.get(name, ""), utc)) for name in sites]  # a missing log: no events
    out = [("submit_job.py started", started),
           ("job received by the server", float(meta["submit_time"]) if meta.get("submit_time") else None),
           ("job running on the server", server[0][0] if server else None)]
    for label, _ in SITE_EVENTS:
        times = [s[label] for s in per_site if label in s]
        out.append((f"{label} (slowest of {len(per_site)})" if len(per_site) > 1 else label,
                    max(times) if times and len(times) == len(per_site) else None))
    out.append(("round 1 end", round_end(server)))
    return out


def report(job_id: str, timeline: list) -> str:
    """The timeline as text: seconds since submit_job.py started, and the step from the event before."""
    t0 = timeline[0][1]
    lines = [f"timeline of job {job_id} (seconds since submit_job.py started; step = since the event above):"]
    prev = t0
    for label, t in timeline:
        if t is None:
            lines.append(f"  {'-':>7}  {'':>8}  {label}: not in the logs")
            continue
        lines.append(f"  {t - t0:7.1f}  {f'+{t - prev:.1f}':>8}  {label}")
        prev = t
    first = dict(timeline).get(next((lb for lb, _ in timeline if lb.startswith("site first optimizer step")), ""))
    if first is not None:
        lines.append(f"submit -> first optimizer step: {first - t0:.1f} s")
    return "\n".join(lines)


def collect(job_id: str, nvflare, started: float, utc: bool = True, site_log=None) -> list:
    """events() with the meta and every participant's job log fetched through `nvflare` (a function running the
    nvflare CLI in an admin console and returning its JSON envelope, like fl_deploy.host.admin_nvflare); a site
    whose log the server does not give is read with site_log(site, job_id) (its raw log.txt, or None), if given."""
    meta = nvflare("job", "meta", job_id).get("data") or {}
    envelope = nvflare("job", "logs", job_id, "--sites", "all", "--tail", "100000")
    logs = {name: text for name, text in ((envelope.get("data") or {}).get("logs") or {}).items() if text}
    # A site whose log.json the server does not have comes back by itself (the CLI then falls back to log.txt)
    for site in job_sites(meta):
        if site not in logs:
            envelope = nvflare("job", "logs", job_id, "--sites", site, "--tail", "100000")
            text = ((envelope.get("data") or {}).get("logs") or {}).get(site)
            if not text and site_log is not None:
                text = site_log(site, job_id)
            if text:
                logs[site] = text
    return events(started, meta, logs, utc)
