"""Which site's job process ended a job, and how, from what the server knows (so also for a site on another host).

NVFlare 2.9: when a site's job process ends while its site lives (the kernel's OOM killer when a batch does not fit
the site's memory, kill -9, a crash), the site's parent process reports the end to the server
(client_executor.py, REPORT_JOB_FAILURE: a SIGKILL is recorded as RC 1 and reported as "exception", like a crash),
and the server fails the whole job at once (fed_server.py process_job_failure: "Failing job <id> due to reported
failure from <site>: <reason>" in the server's log.txt): the round does not wait for round_timeout. A kill and a
crash are told apart by the site's own job log, which the site streams to the server while the job runs (it lands in
the downloaded job's workspace/<site>/log.txt): a crash leaves its traceback there, a killed process stops without
one. (NVFlare's last line of an orderly end, "MPM: Good Bye!", is written after the streaming stops: no witness.)
Host side, standard library only (scripts/submit_job.py).
"""

import os
import re

from fl_deploy.host import compose

TRACEBACK = "Traceback (most recent call last)"


def reported_failures(server_log: str, job_id: str) -> list:
    """[(site, NVFlare's reason)] of the sites whose job process failed the job, from the server's log.txt text."""
    pattern = re.compile(rf"Failing job {re.escape(job_id)} due to reported failure from ([^\s:]+): (.*)")
    seen = []
    for m in pattern.finditer(server_log):
        site = m.group(1).split(".")[0]  # an FQCN (site-2.<job_id>) names the site
        if site not in [s for s, _ in seen]:
            seen.append((site, m.group(2).strip()))
    return seen


def site_job_log(dest: str, site: str):
    """The site's streamed job log and error log in a downloaded result (NVFlare's workspace/<site>/, or
    job_errors.py's site_logs/<site>/ and site_errors/<site>.txt), joined; None when none reached the server."""
    found = []
    for path in (os.path.join(dest, "workspace", site, "log.txt"), os.path.join(dest, "site_logs", site, "log.txt"),
                 os.path.join(dest, "workspace", site, "error_log.txt"),
                 os.path.join(dest, "site_errors", f"{site}.txt")):
        try:
            with open(path, errors="replace") as f:
                found.append(f.read())
        except OSError:
            continue
    return "\n".join(found) if found else None


def describe(failures: list, dest=None) -> list:
    """One sentence per site that failed the job, naming the cause as far as the server knows it."""
    facts = []
    for site, reason in failures:
        log = site_job_log(dest, site) if dest else None
        fact = (f"{site}'s job process ended while the job ran, {site} itself staying up (NVFlare at {site} reported "
                f"'{reason}'), and the server ended the job at once")
        kill = (f"SIGKILL, as the kernel's OOM killer sends when the training does not fit {site}'s memory (then: a "
                f"smaller --batch_size, or more memory for {site}), or kill -9; on {site}'s host: dmesg | grep -i "
                f"oom, docker compose logs {site}")
        if log is not None and TRACEBACK in log:
            fact += f"; it crashed: its error is below (site_errors/, site_logs/{site}/)"
        elif log is not None:
            last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
            last = re.sub(r"\[[^\]]*\] - ", "", last)  # NVFlare's [identity=..., run=...] context
            fact += (f"; its job log, streamed to the server, shows no error of its own and stops at "
                     f"'{last.strip()[:160]}': the process was killed: {kill}")
        else:
            fact += f"; none of its job log reached the server: killed ({kill}) or crashed before logging"
        facts.append(fact)
    return facts
def facts(job_id: str, dest, env_file=None) -> list:
    """describe() for the job, reading the server's log.txt on its volume."""
    run = compose("exec", "-T", "server", "grep", "-h", f"Failing job {job_id} due to reported failure",
                  "/workspace/log.txt", check=False, env_file=env_file)
    return describe(reported_failures(run.stdout or "", job_id), dest)
