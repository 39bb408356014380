"""Which jobs hold which sites now: run in an admin container before a job is submitted.

    python3 -m fl_deploy.admin.job_queue --startup-kit KIT --sites site-1,site-2
    docker compose exec -T admin python3 -m fl_deploy.admin.job_queue --sites site-1

Prints one JSON line: {"holders": [{"job_id", "name", "status", "sites", "submit_time"}]}: the jobs, in submission
order, that are waiting to be scheduled (SUBMITTED, DISPATCHED) or running on the server now (RUNNING in the
job store and listed by the server: after a server restart NVFlare 2.9 leaves a lost job RUNNING in its store
for good, and such a job holds nothing) and that are deployed to at least one of --sites ("@ALL" = every site).
Exit 2 with `error: ...` when the server cannot be asked.
"""

import argparse
import json
import os
import sys

from fl_deploy.admin.follow import session_factory
from fl_deploy.check_job import job_sites
from fl_deploy.host import ADMIN_KIT

WAITING = ("SUBMITTED", "DISPATCHED")


def holders(jobs: list, running: set, sites: list) -> list:
    """The entries of `jobs` (job metas) that hold any of `sites`; running = the job ids the server runs."""
    out = []
    for meta in jobs:
        status = str(meta.get("status", ""))
        if not (status in WAITING or (status == "RUNNING" and meta.get("job_id") in running)):
            continue
        deployed = job_sites(meta)
        everywhere = any(str(t).startswith("@") for targets in (meta.get("deploy_map") or {}).values()
                         for t in (targets if isinstance(targets, list) else []))
        shared = list(sites) if everywhere else [s for s in deployed if s in sites]
        if shared:
            out.append({"job_id": meta.get("job_id"), "name": meta.get("name"), "status": status,
                        "sites": shared, "submit_time": meta.get("submit_time_iso") or meta.get("submit_time")})
    return sorted(out, key=lambda j: str(j["submit_time"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.admin.job_queue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--startup-kit", default=ADMIN_KIT, help="the admin's startup kit folder (default: %(default)s, "
                   "where the admin container's start copies it)")
    p.add_argument("--sites", required=True, help="comma-separated sites of the job about to be submitted")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.startup_kit, "startup", "fed_admin.json")):
        p.error(f"{args.startup_kit} is not an admin startup kit (no startup/fed_admin.json)")
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stdout: the one JSON line
    try:
        session = session_factory(args.startup_kit)()
        try:
            jobs = session.list_jobs(detailed=True)
            running = {j.job_id for j in session.get_system_info().job_info}
        finally:
            session.close()
    except Exception as e:  # the API raises many types; the user needs the one line
        print(f"error: cannot list the server's jobs: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 2
    sites = [s for s in args.sites.split(",") if s]
    out.write(json.dumps({"holders": holders(jobs, running, sites)}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
