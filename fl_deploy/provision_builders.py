"""NVFlare provisioning builders of this project, named in project.yml's `builders:` (run by `nvflare provision`,
which scripts/provision.py calls; fl_deploy must be importable there: the venv and the image have it).

LiveJobLogs: every site streams each job's log to the server while the job runs, with NVFlare 2.9's own parts.
The kits NVFlare writes already carry a site-level SiteLogStreamer, for error_log.txt at the end of a job, and a
server-side JobLogReceiver. This builder, after StaticFileBuilder wrote each kit's local/resources.json.default:

  * sites: adds a SiteLogStreamer for `log_file_name` (default log.txt) before the kit's error-log streamer. The
    first SiteLogStreamer injects the job's JobLogStreamer (one per job: the second sees it and injects none);
    the error-log streamer still uploads error_log.txt when the job ends, from the site's parent process.
  * server: gives the JobLogReceiver `dest_dir` = the server's workspace, so that each site's log is written to
    <workspace>/<job_id>/<site>/<log_file_name> as it arrives, which is where `nvflare job logs JOB --site SITE`
    (and the FLARE API's get_job_logs) read a running job's site log. The workspace comes from the server's
    environment (NVFL_WORKSPACE: the image sets it; fl_deploy/harness/local_federation.py too); NVFlare resolves
    "{$NAME}" in resources.json when the server starts, and without the variable the receiver keeps its default
    (the temp folder: the log then arrives at the job's end only). When the stream ends the server keeps the log
    in the job store (LOG_<file>_<site>, `nvflare job logs` after the job; scripts/submit_job.py downloads it).

OneJobAtATime: the server's own job scheduler (NVFlare's DefaultJobScheduler, in the server kit's
local/resources.json.default) runs at most `max_jobs` jobs at once, default 1: a second job, whatever door it comes
through (submit_job.py, `nvflare job submit`, a FLARE API session, a second admin console), stays SUBMITTED in the
server's queue until the running one ends, then starts by itself. NVFlare's kit template says 4; two training jobs
on the same sites share their GPUs (and run out of memory on one). docs/design.md, "One training job at a time".

A site that must not stream sets `allow_log_streaming: false` on its participant in project.yml (NVFlare's own
switch, rendered into its resources.json).

Only local/resources.json.default changes (NVFlare signs no file of a plain kit; local/ is the site-local
configuration by design). Re-provision (scripts/provision.py --force) to apply it to existing kits.
"""

import json
import os

from nvflare.lighter.spec import Builder

SITE_LOG_STREAMER = "nvflare.app_common.logging.site_log_streamer.SiteLogStreamer"
JOB_LOG_RECEIVER = "nvflare.app_common.logging.job_log_receiver.JobLogReceiver"
STREAMER_ID = "site_job_log_streamer"
WORKSPACE_REF = "{$NVFL_WORKSPACE}"  # resolved by NVFlare's config loader from the server's environment
RESOURCES = "resources.json.default"
JOB_SCHEDULER = "nvflare.app_common.job_schedulers.job_scheduler.DefaultJobScheduler"


def _edit(path: str, change):
    with open(path) as f:
        config = json.load(f)
    change(config.setdefault("components", []))
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def add_site_streamer(components: list, log_file_name: str):
    """The SiteLogStreamer for the job log, first among the site's log streamers (idempotent)."""
    components[:] = [c for c in components if c.get("id") != STREAMER_ID]
    first = next((i for i, c in enumerate(components) if c.get("path") == SITE_LOG_STREAMER), len(components))
    components.insert(first, {"id": STREAMER_ID, "path": SITE_LOG_STREAMER, "args": {"log_file_name": log_file_name}})


def point_receiver_at_workspace(components: list):
    receivers = [c for c in components if c.get("path") == JOB_LOG_RECEIVER]
    if not receivers:  # NVFlare's kit template has one; add it should a later template not
        receivers = [{"id": "log_receiver", "path": JOB_LOG_RECEIVER, "args": {}}]
        components.append(receivers[0])
    for c in receivers:
        c.setdefault("args", {})["dest_dir"] = WORKSPACE_REF


class LiveJobLogs(Builder):
    def __init__(self, log_file_name: str = "log.txt"):
        """
        Args:
            log_file_name: the job log each site streams: log.txt (text) or log.json (the two that `nvflare job
                logs` reads).
        """
        if log_file_name not in ("log.txt", "log.json"):
            raise ValueError(f"log_file_name must be log.txt or log.json (what `nvflare job logs` reads), "
                             f"got {log_file_name!r}")
        self.log_file_name = log_file_name

    def build(self, project, ctx):
        for site in project.get_clients():
            _edit(os.path.join(ctx.get_local_dir(site), RESOURCES),
                  lambda components: add_site_streamer(components, self.log_file_name))
        server = project.get_server()
        if server is not None:
            _edit(os.path.join(ctx.get_local_dir(server), RESOURCES), point_receiver_at_workspace)


def limit_jobs(components: list, max_jobs: int):
    """The server's job scheduler runs at most max_jobs jobs at once (NVFlare's DefaultJobScheduler arg)."""
    schedulers = [c for c in components if c.get("path") == JOB_SCHEDULER]
    if not schedulers:
        raise ValueError(f"the server kit's {RESOURCES} has no {JOB_SCHEDULER}: NVFlare's template changed; "
                         "OneJobAtATime cannot limit its jobs")
    for c in schedulers:
        c.setdefault("args", {})["max_jobs"] = max_jobs


class OneJobAtATime(Builder):
    def __init__(self, max_jobs: int = 1):
        """
        Args:
            max_jobs: jobs the server runs at once (NVFlare's DefaultJobScheduler max_jobs; its template's 4).
                More than 1 lets jobs share the sites' GPUs (submit_job.py --allow-concurrent then runs them
                side by side instead of queueing them).
        """
        if not isinstance(max_jobs, int) or isinstance(max_jobs, bool) or max_jobs < 1:
            raise ValueError(f"max_jobs must be a whole number of jobs, at least 1, got {max_jobs!r}")
        self.max_jobs = max_jobs

    def build(self, project, ctx):
        server = project.get_server()
        if server is not None:
            _edit(os.path.join(ctx.get_local_dir(server), RESOURCES), lambda c: limit_jobs(c, self.max_jobs))
