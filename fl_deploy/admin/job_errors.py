"""The logs the sites sent to the server for a job: their job logs, and why the job failed.

    python3 -m fl_deploy.admin.job_errors JOB_ID --startup-kit ADMIN_KIT [-o DIR] [--sites site-1,site-2]
    docker compose exec admin python3 -m fl_deploy.admin.job_errors JOB_ID

Each site streams its job log (log.txt) to the server while the job runs (provisioning:
fl_deploy/provision_builders.py) and sends its error_log.txt when the job ends; the server keeps them in the job
store as LOG_log.txt_<site> and ERRORLOG_<site> (`nvflare job download` includes neither). This fetches them with
the FLARE API (download_job_components) into DIR/site_logs/<site>/log.txt and DIR/site_errors/<site>.txt (with
--sites it waits up to --wait seconds for the job logs of those sites: a stream closes when the site's job
ends), adds the server's own errors from the job workspace when DIR already holds the downloaded job, reads a
site whose error log is not there yet from its streamed job log, and prints one line per problem (at most 8 per
site): each ERROR record's message and each traceback's last line (the exception and its text). Exit 0 also
when there is nothing to report (it prints so).
"""

import argparse
import glob
import json
import os
import re
import shutil
import sys
import time

from fl_deploy.host import ADMIN_KIT

HEADER = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - (\S+) - (ERROR|CRITICAL) - (.*)$")
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - ")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


def summarize(text: str, limit: int = 8) -> list:
    """One line per problem, in order, deduplicated: ERROR messages and the exception line of tracebacks."""
    found = []
    in_traceback = False
    for line in text.splitlines():
        if m := HEADER.match(line):
            message = m.group(3).strip()
            in_traceback = message.startswith("Traceback") or message.endswith("Traceback (most recent call last):")
            if not in_traceback:
                found.append(re.sub(r"^\[[^\]]*\] - ", "", message))  # drop NVFlare's [identity=...] context
        elif RECORD.match(line):
            in_traceback = False
        elif line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and EXCEPTION.match(line):
            found.append(line.strip())
    unique = list(dict.fromkeys(found))
    # The cause comes first in a failing site, the fallout (aborted tasks, lost peers) after it.
    return unique[:limit]


def fetch(job_id: str, startup_kit: str, out: str, sites: list = (), wait_s: float = 0.0) -> dict:
    """{site: error log text} for the sites that sent one, saved under out/site_errors/; each site's job log
    saved as out/site_logs/<site>/<file>, waiting up to wait_s for those of `sites`."""
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    with open(os.path.join(startup_kit, "startup", "fed_admin.json")) as f:
        username = json.load(f)["admin"]["username"]
    session = new_secure_session(username, startup_kit)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                location = session.download_job_components(job_id)
            except Exception as e:
                if "no_job_components" not in str(e) and "No components" not in str(e):
                    raise
                location = None  # no site had an error or a log to send
            got = {name.split("_")[-1] for name in os.listdir(location or ".") if name.startswith("LOG_")} \
                if location else set()
            if set(sites) <= got or time.monotonic() >= deadline:
                break
            time.sleep(2)
    finally:
        session.close()
    for path in sorted(glob.glob(os.path.join(location or "", "LOG_*"))):
        file_name, _, site = os.path.basename(path)[len("LOG_"):].rpartition("_")
        os.makedirs(os.path.join(out, "site_logs", site), exist_ok=True)
        shutil.copy(path, os.path.join(out, "site_logs", site, file_name))
    dest = os.path.join(out, "site_errors")
    logs = {}
    for path in sorted(glob.glob(os.path.join(location or "", "ERRORLOG_*"))):
        os.makedirs(dest, exist_ok=True)
        site = os.path.basename(path)[len("ERRORLOG_"):]
        shutil.copy(path, os.path.join(dest, f"{site}.txt"))
        with open(path, errors="replace") as f:
            logs[site] = f.read()
    return logs


def problems(logs: dict, out: str) -> list:
    """'<site>: <problem>' lines from the error logs ({site: text}), the server's first (out/workspace/error_log.txt);
    a site whose error log has not reached the server yet (sites send it once their job process has ended) is read
    from its job log, streamed while the job ran (out/site_logs/<site>/log.txt): the same ERROR records and
    tracebacks."""
    logs = dict(logs)
    site_logs = os.path.join(out, "site_logs")
    for site in sorted(os.listdir(site_logs)) if os.path.isdir(site_logs) else []:
        path = os.path.join(site_logs, site, "log.txt")
        if site not in logs and os.path.isfile(path):
            with open(path, errors="replace") as f:
                logs[site] = f.read()
    server_log = os.path.join(out, "workspace", "error_log.txt")
    if os.path.isfile(server_log):
        with open(server_log, errors="replace") as f:
            logs = {"server": f.read(), **logs}
    return [f"{site}: {line[:400]}" for site, text in logs.items() for line in summarize(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.admin.job_errors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id")
    p.add_argument("--startup-kit", default=ADMIN_KIT, help="the admin's startup kit folder (default: %(default)s, "
                   "where the admin container's start copies it)")
    p.add_argument("-o", "--out", default=".", help="where to keep the logs (site_logs/<site>/, site_errors/)")
    p.add_argument("--sites", default="", help="comma-separated sites whose job logs to wait for")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for those logs")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.startup_kit, "startup", "fed_admin.json")):
        p.error(f"{args.startup_kit} is not an admin startup kit (no startup/fed_admin.json)")
    # stdout: the problems only; the FLARE API's own chatter ("Connecting to FLARE ...") goes to stderr.
    sys.stdout.flush()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        logs = fetch(args.job_id, args.startup_kit, args.out, [s for s in args.sites.split(",") if s], args.wait)
    except Exception as e:  # the API raises many types; the user needs the one line
        print(f"error: cannot fetch the logs of job {args.job_id}: {e}", file=sys.stderr)
        return 2
    lines = problems(logs, args.out) or [f"job {args.job_id}: no errors reported by the server or the sites"]
    print("\n".join(lines), file=out)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
