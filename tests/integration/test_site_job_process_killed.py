"""A site's training process killed (the kernel's OOM killer) while the site itself lives."""

import os
import signal
import time

import support

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
ROUNDS = 3


def job_process(site_workspace: str) -> int:
    """The pid of the site's job process (NVFlare's worker_process), whose workspace is site_workspace."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "worker_process" in cmd and site_workspace in cmd:
            return int(pid)
    return 0


def test_a_sites_killed_job_process_ends_the_job_at_once_named_from_the_servers_side(tmp_path, tiny_assets, figures):
    """site-2's job process SIGKILLed mid-round (what the kernel's OOM killer does when a batch does not fit), its
    site alive; round_timeout at its default 3600 s. NVFlare's server ends the job within seconds, and what the
    server holds (its log, the sites' streamed job logs: no Docker, so as for a site on another host) names site-2
    and the kill; site-1, stopped by the server, is not blamed."""
    from fl_deploy import site_failure
    from fl_deploy.admin import job_errors

    fed = local_federation.ProcessFederation(str(tmp_path), SITES)
    fed.start()
    try:
        fed.wait_for_sites()
        job = support.tiny_job(str(tmp_path / "job"), SITES, ROUNDS, tiny_assets, "--min_sites", "1")
        # round_timeout: the default 3600 s
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.wait_for_site_log("site-2", job_id, "site-2: round 1 received")  # round 2 reached site-2
        pid = job_process(fed.workspace("site-2"))
        assert pid, "no job process of site-2"
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        fed.nvflare("job", "wait", job_id, "--timeout", "600", timeout=700)
        ended_s = time.monotonic() - killed
        status = fed.nvflare("job", "meta", job_id)["data"]["status"]
        site_alive = fed.procs["site-2"].poll() is None
        # What submit_job.py's download fetches: the job (with the logs the sites streamed), then their error logs.
        dest = fed.nvflare("job", "download", job_id, "-o", str(tmp_path / "dl"))["data"]["download_path"]
        job_errors.fetch(job_id, fed.admin_kit, dest, SITES)
        with open(os.path.join(fed.workspace("localhost"), "log.txt")) as f:
            server_log = f.read()
    finally:
        fed.stop()
    assert status.startswith("FINISHED:") and status != "FINISHED:COMPLETED", status
    assert site_alive
    assert ended_s < 120, f"the job ended {ended_s:.0f} s after the kill"  # not round_timeout's 3600 s
    failures = site_failure.reported_failures(server_log, job_id)
    assert failures == [("site-2", "exception")], failures
    facts = site_failure.describe(failures, dest)
    assert len(facts) == 1 and facts[0].startswith("site-2's job process ended while the job ran"), facts
    assert "shows no error of its own and stops at" in facts[0] and "the process was killed: SIGKILL" in facts[0]
    figures(f"site-2's job process SIGKILLed mid-round (round_timeout 3600 s): job {status} "
          f"{ended_s:.0f} s later; cause: {facts[0][:300]}")
