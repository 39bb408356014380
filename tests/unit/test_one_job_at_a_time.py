"""One training job at a time, enforced where every door passes: the server's own job scheduler, configured by
provisioning (fl_deploy/provision_builders.py OneJobAtATime); a job held back is shown as waiting for the one that
runs (fl_deploy/admin/follow.py's "queued" event, submit_job.py's line)."""

import io
import json
import os

import pytest

from fl_deploy.admin import follow
from fl_deploy.provision_builders import JOB_SCHEDULER, OneJobAtATime, limit_jobs


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    """The kits of a two-site federation provisioned with project.yml's builders by the real `nvflare provision`."""
    from fl_deploy.harness import local_federation
    from fl_deploy.project import load_project
    from fl_deploy.provision import provision

    root = tmp_path_factory.mktemp("one-job")
    local_federation.write_project(str(root / "project.yml"), 8002, ["site-1", "site-2"])
    return provision(load_project(str(root / "project.yml")), str(root / "ws"), str(root / "store"), force=False,
                     service_uid=0)


def schedulers(kit: str, name: str) -> list:
    with open(os.path.join(kit, "local", name)) as f:
        return [c for c in json.load(f)["components"] if c["path"] == JOB_SCHEDULER]


def test_provisioning_gives_the_server_one_job_at_a_time(kits):
    """The server kit's job scheduler (both the template copy and the active resources.json the storage override
    writes) runs one job at once; NVFlare's own is 4."""
    for name in ("resources.json.default", "resources.json"):
        assert [c["args"]["max_jobs"] for c in schedulers(kits["localhost"], name)] == [1], name


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


def lifecycle(scheduler, event: str, job_id: str):
    from nvflare.apis.fl_constant import FLContextKey
    from nvflare.apis.fl_context import FLContext

    ctx = FLContext()
    ctx.set_prop(FLContextKey.EVENT_DATA, {"job_id": job_id}, private=True, sticky=False)
    scheduler.handle_event(event, ctx)


def test_nvflares_scheduler_from_the_kit_holds_a_job_then_starts_it(kits, tmp_path):
    """NVFlare's own scheduler, built from the server kit's component: while one job runs, a job exported by
    NVFlare's FedAvgRecipe (no resource_spec, @ALL: what any door submits) is not even tried (no schedule try
    counted, so it never ends FINISHED_CANT_SCHEDULE); once that job completes it is scheduled on the next poll."""
    from unittest import mock

    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.apis.job_def import job_from_meta
    from nvflare.apis.server_engine_spec import ServerEngineSpec
    from nvflare.fuel.utils.class_utils import instantiate_class

    import support

    (config,) = schedulers(kits["localhost"], "resources.json")
    scheduler = instantiate_class(config["path"], config["args"])
    with open(os.path.join(support.stock_recipe_job(str(tmp_path)), "meta.json")) as f:
        meta = dict(json.load(f), job_id="queued", submit_time=1.0)
    assert not meta.get("resource_spec")
    job = job_from_meta(meta)
    engine = mock.MagicMock(spec=ServerEngineSpec)
    engine.get_clients.return_value = [mock.Mock(), mock.Mock()]
    for client, name in zip(engine.get_clients.return_value, ("site-1", "site-2")):
        client.name = name
    # What each site's resource manager answers for a job that asks for nothing.
    engine.check_client_resources.side_effect = lambda job, reqs, ctx: {s: (True, None) for s in reqs}

    def context():
        ctx = FLContext()
        ctx.set_prop(ReservedKey.ENGINE, engine, private=True, sticky=False)
        return ctx

    engine.new_context.return_value.__enter__.side_effect = lambda *a: context()
    lifecycle(scheduler, EventType.JOB_STARTED, "running")
    for _ in range(3):
        assert scheduler.schedule_job(mock.Mock(), [job], context()) == (None, None)
    assert "schedule_count" not in job.meta and "schedule_history" not in job.meta
    lifecycle(scheduler, EventType.JOB_COMPLETED, "running")
    ready, sites = scheduler.schedule_job(mock.Mock(), [job], context())
    assert ready is job and sorted(sites) == ["server", "site-1", "site-2"]
    assert job.meta["schedule_count"] == 1 and job.meta["schedule_history"][0].endswith(": scheduled")
