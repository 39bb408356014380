"""Why did a job fail? Fetch the error logs the sites sent to the server and print what they say.

    python3 -m fl_deploy.job_errors JOB_ID --startup-kit ADMIN_KIT [-o DIR]
    docker compose exec admin python3 -m fl_deploy.job_errors JOB_ID --startup-kit /home/fl/admin-kit

At the end of a job every site sends its error_log.txt to the server, which keeps it in the job store as
ERRORLOG_<site> (`nvflare job download` does not include it). This fetches those with the FLARE API
(download_job_components), plus the server's own errors from the job workspace when -o already holds the
downloaded job, and prints one line per problem: each ERROR record's message and each traceback's last line
(the exception and its text). Exit 0 also when there is nothing to report (it prints so).
"""

import argparse
import glob
import json
import os
import re
import shutil
import sys

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


def fetch(job_id: str, startup_kit: str, out: str) -> dict:
    """{site: error log text} for the sites that sent one, saved under out/site_errors/."""
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    with open(os.path.join(startup_kit, "startup", "fed_admin.json")) as f:
        username = json.load(f)["admin"]["username"]
    session = new_secure_session(username, startup_kit)
    try:
        location = session.download_job_components(job_id)
    except Exception as e:
        if "no_job_components" not in str(e) and "No components" not in str(e):
            raise
        location = None  # no site had an error to send
    finally:
        session.close()
    dest = os.path.join(out, "site_errors")
    os.makedirs(dest, exist_ok=True)
    logs = {}
    for path in sorted(glob.glob(os.path.join(location or "", "ERRORLOG_*"))):
        site = os.path.basename(path)[len("ERRORLOG_"):]
        shutil.copy(path, os.path.join(dest, f"{site}.txt"))
        with open(path, errors="replace") as f:
            logs[site] = f.read()
    return logs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.job_errors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id")
    p.add_argument("--startup-kit", required=True, help="the admin's startup kit folder")
    p.add_argument("-o", "--out", default=".", help="where to keep the logs (site_errors/<site>.txt)")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.startup_kit, "startup", "fed_admin.json")):
        p.error(f"{args.startup_kit} is not an admin startup kit (no startup/fed_admin.json)")
    try:
        logs = fetch(args.job_id, args.startup_kit, args.out)
    except Exception as e:  # the API raises many types; the user needs the one line
        print(f"error: cannot fetch the error logs of job {args.job_id}: {e}", file=sys.stderr)
        return 2
    server_log = os.path.join(args.out, "workspace", "error_log.txt")
    if os.path.isfile(server_log):
        with open(server_log, errors="replace") as f:
            logs = {"server": f.read(), **logs}
    reported = False
    for site, text in logs.items():
        for line in summarize(text):
            print(f"{site}: {line[:400]}")
            reported = True
    if not reported:
        print(f"job {args.job_id}: no errors reported by the server or the sites")
    return 0


if __name__ == "__main__":
    sys.exit(main())
