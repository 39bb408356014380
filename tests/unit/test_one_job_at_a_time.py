"""One training job at a time, enforced where every door passes: the server's own job scheduler, configured by
provisioning (fl_deploy/provision_builders.py OneJobAtATime); a job held back is shown as waiting for the one that
runs (fl_deploy/admin/follow.py's "queued" event, submit_job.py's line)."""

import io
import json
import os

import pytest

from fl_deploy.admin import follow
from fl_deploy.provision_builders import JOB_SCHEDULER, OneJobAtATime, limit_jobs


def test_provisioning_gives_the_server_one_job_at_a_time(tmp_path):
    """project.yml's builders, run by the real `nvflare provision`: the server kit's job scheduler (both the template
    copy and the active resources.json the storage override writes) runs one job at once; NVFlare's own is 4."""
    from fl_deploy.harness import local_federation
    from fl_deploy.project import load_project
    from fl_deploy.provision import provision

    local_federation.write_project(str(tmp_path / "project.yml"), 8002, ["site-1", "site-2"])
    kits = provision(load_project(str(tmp_path / "project.yml")), str(tmp_path / "ws"), str(tmp_path / "store"),
                     force=False, service_uid=0)
    for name in ("resources.json.default", "resources.json"):
        with open(os.path.join(kits["localhost"], "local", name)) as f:
            schedulers = [c for c in json.load(f)["components"] if c["path"] == JOB_SCHEDULER]
        assert [c["args"]["max_jobs"] for c in schedulers] == [1], name


def test_the_builder_takes_a_whole_number_of_jobs_and_needs_nvflares_scheduler():
    components = [{"id": "job_scheduler", "path": JOB_SCHEDULER, "args": {"max_jobs": 4}}]
    limit_jobs(components, 2)
    assert components[0]["args"] == {"max_jobs": 2}
    with pytest.raises(ValueError, match="has no .*DefaultJobScheduler"):
        limit_jobs([{"id": "job_manager", "path": "x.SimpleJobDefManager"}], 1)
    for bad in (0, "1", True, 1.5):
        with pytest.raises(ValueError, match="at least 1"):
            OneJobAtATime(bad)


class QueueSession:
    """The server's answers while job 'abc' waits behind 'j9', then runs and finishes."""

    def __init__(self):
        self.polls = 0

    def get_job_meta(self, job_id):
        if job_id == "j9":
            return {"job_id": "j9", "name": "gpt2-fedavg-stream", "status": "RUNNING"}
        self.polls += 1
        return {"status": "SUBMITTED" if self.polls <= 2 else "FINISHED:COMPLETED"}

    def get_system_info(self):
        class Info:
            job_info = [type("J", (), {"job_id": "j9"})] if self.polls <= 2 else []
            client_info = []
        return Info()

    def get_job_logs(self, job_id, target, log_file_name="log.txt"):
        return {"logs": {target: ""}}

    def close(self):
        pass


def test_a_job_held_back_says_which_job_it_waits_for_once(monkeypatch):
    monkeypatch.setattr(follow, "LIVE_CHECK_S", 0)
    out = io.StringIO()
    assert follow.Follower("abc", QueueSession, out=out, interval=0).run() == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    queued = [e for e in events if e["event"] == "queued"]
    assert [e["behind"] for e in queued] == [[{"job_id": "j9", "name": "gpt2-fedavg-stream"}]]  # said once
    assert [e["event"] for e in events] == ["status", "queued", "job_end"]


def test_submit_job_prints_the_wait_in_words():
    from fl_deploy.submit_job.following import Reporter

    line = Reporter().human({"event": "queued", "time": 0.0, "behind": [{"job_id": "j9", "name": "gpt2-fedavg"}]})
    assert line.endswith("waiting for job j9 (gpt2-fedavg) to finish: the server runs one training job at a time; "
                         "this one starts by itself after")
