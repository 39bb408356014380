"""A job that did not complete, summarised by its cause as far as the server and Docker know (fl_deploy/diagnose.py),
what the server and the sites reported, and the next step (resume from the last saved round, or fix and submit
again). Host side, standard library only; everything goes to stderr."""

import os
import sys
import time

from fl_deploy import checkpoints, diagnose, disk_usage, site_failure
from fl_deploy.host import AdminConsole


def abnormal_end(job_id: str, status: str, dest, errors: list, since: float, console: AdminConsole):
    """Print why job ``job_id`` ended ``status``. dest: its downloaded folder, or None; errors: job_errors.py's
    lines; since: when it was submitted (epoch seconds: Docker's events from then on)."""
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    facts = diagnose.describe(diagnose.job_process_exit(job_id, console.env_file),
                              diagnose.docker_events(diagnose.project_name(console.env_file), since, time.time()),
                              diagnose.job_runner_finished(os.path.join(dest, "workspace", "log.txt")) if dest else None)
    # A site's job process ended it (on another host too); the server's volume filled.
    facts = site_failure.facts(job_id, dest, console.env_file) + disk_usage.facts(dest, console.env_file) + facts
    say(f"error: job {job_id} ended {status}.")
    for fact in facts or ["neither the server's job process nor Docker recorded a crash, a kill or an "
                          "out-of-memory kill: the job itself failed, see what it reported below"]:
        say(f"  cause: {fact}")
    reported = [line for line in errors if "no errors reported" not in line]
    if reported:
        say("  what the server and the sites reported:")
        for line in reported:  # job_errors.py keeps at most 8 per site
            say(f"    {line}")
    say(f"  next: {diagnose.next_step(job_id, checkpoints.saved_round(job_id, console.env_file))}")
    if dest:
        logs = [p for p in ("site_logs", "site_errors") if os.path.isdir(os.path.join(dest, p))]
        say(f"  logs: {os.path.relpath(dest)}/workspace/log.txt (server)"
            + "".join(f", {os.path.relpath(dest)}/{p}/" for p in logs) + "; docker compose logs SERVICE")
