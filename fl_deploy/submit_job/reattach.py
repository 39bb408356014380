"""Re-attach to a job that outlived its submit_job.py (Ctrl-C, a dropped SSH session, --timeout).

    python3 scripts/submit_job.py --follow JOB_ID

The job runs on the server, not in submit_job.py: ending submit_job.py never stops it. `--follow JOB_ID` takes
the job from the server's job store (`nvflare job meta`) instead of submitting one, then goes the rest of
submit_job.py's way unchanged: fl_deploy/admin/follow.py reads the server's job log from its first line, so the rounds
that ran while nobody followed are printed first (with the server's times), then the live ones; a finished job
is replayed and ends at once. Then the download into results/<job_id>/, the export, the summary and, for a job
that ended abnormally, its cause and the next step, exactly as for a job followed from its submission.

Why `--follow`: it is the word of `docker compose logs --follow`, `kubectl logs --follow` and `tail --follow` for
"stay with what runs". NVFlare 2.9's own `nvflare job monitor JOB_ID` (which an NVFlare user would try, and which
works here too: `docker compose exec admin nvflare job monitor JOB_ID --startup-kit ADMIN_KIT`) waits for the
job and prints its status, without the rounds, the download, the export or the summary. A re-attached job that
continued another (--resume) is downloaded without the earlier job's rounds (lineage.py needs --resume's start).
"""

import time

from fl_deploy.check_job import job_sites
from fl_deploy.host import ADMIN_KIT, AdminConsole, HostError

COMMAND = "python3 scripts/submit_job.py --follow {job_id}"


def how_to_reattach(job_id: str, admin: str, why: str) -> str:
    """The line submit_job.py prints when it stops following a job that goes on (Ctrl-C, --timeout)."""
    return (f"{why}; job {job_id} keeps running on the server. Re-attach (it prints the rounds so far, then "
            f"follows, downloads and summarises the job): {COMMAND.format(job_id=job_id)}; or stop it: "
            f"docker compose exec {admin} nvflare job abort {job_id} --startup-kit {ADMIN_KIT}")


def check_args(parser, args):
    """--follow takes a job that exists: it cannot be combined with what makes or submits one."""
    if not args.follow:
        return
    clash = [flag for flag, given in (("--job-folder", args.job_folder), ("--resume", args.resume),
                                      (" ".join(args.job_flags), args.job_flags)) if given]
    if clash:
        parser.error(f"--follow re-attaches to job {args.follow} as it was submitted: {clash[0]} cannot apply")


def attach(job_id: str, console: AdminConsole) -> tuple:
    """The job to follow, from the server's job store: (its sites, for the download of their logs; its submission
    time in seconds since the epoch: where the search for a cause of an abnormal end starts). HostError when the
    server does not know the job."""
    meta = console.nvflare("job", "meta", job_id, check=False)
    data = meta.get("data") if meta.get("status") == "ok" else None
    if not isinstance(data, dict) or not data.get("status"):
        raise HostError(f"the server has no job {job_id} ({meta.get('message') or 'no answer'}); its jobs: "
                        f"docker compose exec {console.service} nvflare job list --startup-kit {console.kit}")
    submitted = data.get("submit_time")
    return job_sites(data), float(submitted) if isinstance(submitted, (int, float)) else time.time()
