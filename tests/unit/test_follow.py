"""The live follower (fl_deploy/admin/follow.py) on scripted server answers, and how submit_job.py acts on its events."""

import io
import json
import time
from datetime import datetime

import pytest

from fl_deploy.admin import follow


def record(t: str, name: str, message: str, level: str = "INFO") -> str:
    """One log.json line as NVFlare writes it (local time, milliseconds)."""
    return json.dumps({"asctime": t, "name": name, "levelname": level, "fl_ctx": "", "message": message})


def ts(t: str) -> float:
    return datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp()


BANNER = "\n" + "-" * 80 + "\n" + "Round {} started.".center(80) + "\n" + "-" * 80 + "\n"
JOB_LOG = [
    record("2026-11-30 23:35:12,701", "LargeModelFedAvg", "loading initial model from persistor"),
    record("2026-11-30 23:35:12,702", "LargeModelFedAvg", BANNER.format(0)),
    record("2026-11-30 23:35:22,518", "ServerRunner", "got result from client site-1 for task: name=train, id=3a02"),
    record("2026-11-30 23:35:22,661", "ServerRunner", "got result from client site-2 for task: name=train, id=759b"),
    record("2026-11-30 23:35:23,220", "LargeModelFedAvg", "End persist model on server."),
    record("2026-11-30 23:35:23,221", "LargeModelFedAvg",
           "round 1/3 done in 10.52 s: 2 results aggregated (site-1, site-2); server peak memory 0.41 GiB"),
    record("2026-11-30 23:35:23,222", "LargeModelFedAvg", BANNER.format(1)),
    record("2026-11-30 23:35:25,001", "LargeModelFedAvg", "round 2: 1 of 2 sites answered within 60s; no result "
           "from site-2; aggregating the others", level="WARNING"),
    record("2026-11-30 23:35:26,058", "ServerRunner", "got result from client site-1 for task: name=train, id=299c"),
    record("2026-11-30 23:35:26,232", "LargeModelFedAvg",
           "round 2/3 done in 3.01 s: 1 result aggregated (site-1); server peak memory 0.41 GiB"),
]


def test_server_log_gives_rounds_results_and_eta_with_server_times():
    events = follow.ServerLog().records(JOB_LOG)
    kinds = [e["event"] for e in events]
    assert kinds == ["round_started", "site_result", "site_result", "round_done", "round_started", "server_log",
                     "site_result", "round_done"]
    assert events[0] == {"event": "round_started", "time": ts("2026-11-30 23:35:12,702"), "round": 1}
    assert events[1]["site"] == "site-1" and events[1]["round_s"] == pytest.approx(9.816, abs=1e-3)
    done1, done2 = events[3], events[7]
    assert (done1["round"], done1["rounds"], done1["round_s"], done1["results"], done1["sites"]) == \
        (1, 3, 10.52, 2, ["site-1", "site-2"])
    assert done1["time"] == ts("2026-11-30 23:35:23,221")
    assert done1["eta_s"] == pytest.approx(10.52 * 2, abs=0.1)  # mean round so far x rounds left
    assert done2["eta_s"] == pytest.approx((10.52 + 3.01) / 2, abs=0.1)
    assert events[5]["level"] == "WARNING" and events[5]["message"].startswith("round 2: 1 of 2 sites answered")
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_a_job_without_our_summary_ends_its_rounds_at_nvflares_persist():
    """A foreign job (no round_stats summary line): the round ends at 'End persist model on server.', no ETA."""
    lines = [JOB_LOG[1], JOB_LOG[2], JOB_LOG[4],
             record("2026-11-30 23:35:23,230", "FedAvg", BANNER.format(1)),
             record("2026-11-30 23:35:29,000", "FedAvg", "End persist model on server."),
             record("2026-11-30 23:35:29,100", "FedAvg", "\nFinished FedAvg.\n")]
    events = follow.ServerLog().records(lines)
    done = [e for e in events if e["event"] == "round_done"]
    assert [(e["round"], e["time"], e["eta_s"]) for e in done] == [
        (1, ts("2026-11-30 23:35:23,220"), None), (2, ts("2026-11-30 23:35:29,000"), None)]
    assert done[0]["round_s"] == pytest.approx(10.518, abs=1e-3)


def test_new_lines_of_a_growing_or_truncated_log():
    lines = follow.NewLines()
    assert lines.feed("a\nb\npart") == ["a", "b"]  # a line without its newline waits
    assert lines.feed("a\nb\npartial\nc\n") == ["partial", "c"]
    assert lines.feed("a\nb\npartial\nc\n") == []
    # Longer than NVFlare returns: its notice, then the tail; go on after the last line taken.
    assert lines.feed("... output truncated to last 5242880 bytes ...\npartial\nc\nd\ne\n") == ["d", "e"]
    assert lines.feed("... output truncated to last 5242880 bytes ...\nd\ne\nf\n") == ["f"]


def test_site_log_lines_keep_their_record_time():
    reader = follow.SiteLog("site-1")
    text = ("2026-11-30 23:50:30,100 - TaskScriptRunner - INFO - [identity=site-1, run=x] - site-1: round 0 received "
            "42 tensors\n2026-11-30 23:50:31,200 - ClientRunner - ERROR - boom\nTraceback (most recent call last):\n"
            "ValueError: bad\n")
    events = reader.feed(text)
    assert [(e["level"], e["message"]) for e in events] == [
        ("INFO", "site-1: round 0 received 42 tensors"), ("ERROR", "boom"),
        (None, "Traceback (most recent call last):"), (None, "ValueError: bad")]
    assert events[1]["time"] == events[3]["time"] == ts("2026-11-30 23:50:31,200")
    assert all(e["site"] == "site-1" and e["event"] == "site_log" for e in events)


def test_schedule_history_failures_become_events():
    history = ["2026-11-30 23:35:07: scheduled",
               "2026-11-30 23:35:08: not enough sites have enough resources (ok sites 1 < min sites 2)"]
    events = follow.schedule_events(history, 0)
    assert events == [{"event": "not_scheduled", "reason": "not enough sites have enough resources (ok sites 1 < "
                       "min sites 2)", "time": datetime(2026, 11, 30, 23, 35, 8).timestamp()}]
    assert follow.schedule_events(history, 2) == []


class FakeSession:
    """Scripted FLARE API answers: each call pops the next meta (an exception is raised)."""

    def __init__(self, metas, running=(), server_log=""):
        self.metas = list(metas)
        self.running = list(running)
        self.server_log = server_log
        self.closed = 0

    def get_job_meta(self, job_id):
        meta = self.metas.pop(0) if len(self.metas) > 1 else self.metas[0]
        if isinstance(meta, Exception):
            raise meta
        return meta

    def get_system_info(self):
        class Info:
            job_info = [type("J", (), {"job_id": j}) for j in self.running]
            client_info = []
        return Info()

    def get_job_logs(self, job_id, target, log_file_name="log.txt"):
        return {"logs": {target: self.server_log}}

    def close(self):
        self.closed += 1


def run_follower(session, **kw) -> tuple:
    out = io.StringIO()
    f = follow.Follower("abc", lambda: session, out=out, interval=0, **kw)
    rc = f.run()
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


def test_follower_reports_a_job_the_server_lost(monkeypatch):
    """After a server restart the store says RUNNING for good while the server runs nothing: interrupted."""
    monkeypatch.setattr(follow, "LIVE_CHECK_S", 0)
    rc, events = run_follower(FakeSession([{"status": "RUNNING", "start_time": "2026-11-30T23:35:08+00:00"}]))
    assert rc == 3
    assert events[0]["event"] == "status" and events[0]["status"] == "RUNNING"
    assert events[-1]["event"] == "interrupted" and "no longer runs the job" in events[-1]["reason"]


def test_follower_waits_out_a_short_server_outage():
    session = FakeSession([ConnectionError("no answer"), ConnectionError("no answer"),
                           {"status": "FINISHED:COMPLETED"}], server_log="\n".join(JOB_LOG) + "\n")
    rc, events = run_follower(session)
    assert rc == 0
    assert [e["event"] for e in events][0] == "server_unreachable"  # said once, not per retry
    assert sum(e["event"] == "server_unreachable" for e in events) == 1
    assert events[-1] == {"event": "job_end", "time": events[-1]["time"], "status": "FINISHED:COMPLETED"}
    assert [e["round"] for e in events if e["event"] == "round_done"] == [1, 2]
    progress = [e["time"] for e in events if e["event"] != "server_unreachable"]
    assert progress == sorted(progress)


def test_follower_gives_up_after_the_server_grace():
    rc, events = run_follower(FakeSession([ConnectionError("refused")]), server_grace=0.05)
    assert rc == 3 and events[-1]["event"] == "interrupted" and "not answered" in events[-1]["reason"]


class FakeFollowerProcess:
    """What submit_job.follow() starts (docker compose exec ... fl_deploy.admin.follow): prints scripted events."""

    def __init__(self, events, rc=0):
        self.stdout = iter(json.dumps(e) + "\n" for e in events)
        self.stderr = iter([])
        self.returncode = None
        self._rc = rc

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        self.returncode = self._rc
        return self._rc

    def terminate(self):
        self.returncode = -15


def host_follow(monkeypatch, events, argv=(), rc=0):
    """following.follow() with a scripted follower process; returns (a follow(job_id) to call, the reporter's
    output, the commands it ran)."""
    from fl_deploy import host, submit_job
    from fl_deploy.submit_job import following

    calls = []
    monkeypatch.setattr(following.subprocess, "Popen", lambda cmd, **kw: calls.append(cmd) or FakeFollowerProcess(events, rc))
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **kw: calls.append(a) or {"status": "ok"})
    out = io.StringIO()
    args = submit_job.parse_args(["--env-file", "/nonexistent.env", *argv])
    report = following.Reporter(args.json, args.logs, out=out)
    console = host.AdminConsole(args.admin, args.env_file)
    return (lambda job_id: following.follow(job_id, console, report, args.timeout, args.interval, args.server_grace,
                                            args.logs)), out, calls


def test_host_turns_an_interrupted_job_into_the_resume_command(monkeypatch):
    from fl_deploy.submit_job.following import JobInterrupted

    follow, out, _ = host_follow(monkeypatch, [
        {"event": "status", "time": time.time(), "status": "RUNNING"},
        {"event": "interrupted", "time": time.time(), "reason": "the server no longer runs the job"}], rc=3)
    with pytest.raises(JobInterrupted, match=r"python3 scripts/submit_job.py --resume abc"):
        follow("abc")


def test_host_aborts_an_unschedulable_job_with_the_schedulers_reason(monkeypatch):
    reason = "not enough sites have enough resources (ok sites 1 < min sites 2)"
    from fl_deploy.submit_job.following import NotScheduled

    follow, out, calls = host_follow(monkeypatch, [
        {"event": "status", "time": time.time(), "status": "SUBMITTED"},
        {"event": "not_scheduled", "time": time.time(), "reason": reason}])
    with pytest.raises(NotScheduled) as e:
        follow("abc")
    assert reason in str(e.value) and "aborted" in str(e.value)
    assert ("job", "abort", "abc", "--force") in calls
    assert f"not scheduled: {reason}" in out.getvalue()


def test_host_prints_each_event_with_its_server_time_or_passes_json_through(monkeypatch):
    t = ts("2026-11-30 23:35:23,221")
    events = [{"event": "round_started", "time": t - 10, "round": 1},
              {"event": "site_result", "time": t - 1, "round": 1, "site": "site-1", "round_s": 9.0},
              {"event": "round_done", "time": t, "round": 1, "rounds": 3, "round_s": 10.5, "results": 2,
               "sites": ["site-1", "site-2"], "eta_s": 21.0},
              {"event": "site_log", "time": t, "site": "site-2", "level": "INFO", "logger": "x", "message": "hello"},
              {"event": "job_end", "time": t + 1, "status": "FINISHED:COMPLETED"}]
    from fl_deploy.submit_job.following import Reporter

    follow, out, calls = host_follow(monkeypatch, events)
    assert Reporter().human({"event": "results", "time": t, "job_id": "abc", "path": "results/abc"}) is None
    assert follow("abc") == "FINISHED:COMPLETED"
    lines = out.getvalue().splitlines()
    assert lines == [
        f"[{time.strftime('%H:%M:%S', time.localtime(t - 10))}.221] round 1 started",
        f"[{time.strftime('%H:%M:%S', time.localtime(t - 1))}.221]   round 1: result from site-1 (9.0 s into the round)",
        f"[{time.strftime('%H:%M:%S', time.localtime(t))}.221] round 1/3 done in 10.5 s: 2 results aggregated; "
        "ETA 21 s (2 rounds left)",
        f"[{time.strftime('%H:%M:%S', time.localtime(t + 1))}.221] job abc: FINISHED:COMPLETED"]  # no logs: no --logs
    assert "--logs" not in calls[0]
    follow, out, calls = host_follow(monkeypatch, events, ["--json", "--logs"])
    assert follow("abc") == "FINISHED:COMPLETED"
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in got] == [e["event"] for e in events]
    assert got[2]["eta_s"] == 21.0 and got[-1]["job_id"] == "abc"
    assert "--logs" in calls[0]


def test_one_job_at_a_time_names_the_holder():
    from fl_deploy.admin.job_queue import holders

    def meta(job_id, status, sites, when):
        return {"job_id": job_id, "name": "gpt2-fedavg-stream", "status": status, "submit_time_iso": when,
                "deploy_map": {"app_server": ["server"], "app_site": sites}}

    jobs = [meta("old", "RUNNING", ["site-1", "site-2"], "2026-11-30T10:00"),       # lost in a restart: not live
            meta("done", "FINISHED:COMPLETED", ["site-1"], "2026-11-30T11:00"),
            meta("live", "RUNNING", ["site-2", "site-3"], "2026-11-30T12:00"),
            meta("queued", "SUBMITTED", ["@ALL"], "2026-11-30T13:00"),
            meta("elsewhere", "RUNNING", ["site-9"], "2026-11-30T14:00")]
    held = holders(jobs, running={"live", "elsewhere"}, sites=["site-1", "site-2"])
    assert [(h["job_id"], h["sites"]) for h in held] == [("live", ["site-2"]), ("queued", ["site-1", "site-2"])]
    # "live" no longer runs (its store may still say RUNNING); the queued @ALL job holds every site.
    assert [(h["job_id"], h["sites"]) for h in holders(jobs, running={"elsewhere"}, sites=["site-3"])] == \
        [("queued", ["site-3"])]
    assert holders(jobs[:3], running={"elsewhere"}, sites=["site-3"]) == []


def test_submit_refuses_while_another_job_holds_the_sites(monkeypatch):
    from fl_deploy import host
    from fl_deploy.host import AdminConsole, HostError
    from fl_deploy.submit_job import preflight

    answer = {"holders": [{"job_id": "j9", "name": "gpt2-fedavg-stream", "status": "RUNNING", "sites": ["site-1"],
                           "submit_time": "2026-11-30T12:00:00+00:00"}]}

    class Run:
        stdout, stderr, returncode = json.dumps(answer) + "\n", "", 0

    monkeypatch.setattr(host, "compose", lambda *a, **kw: Run())
    with pytest.raises(HostError) as e:
        preflight.require_free_sites(["site-1", "site-2"], AdminConsole(env_file="/nonexistent.env"))
    text = str(e.value)
    assert "job j9 (gpt2-fedavg-stream, RUNNING, submitted 2026-11-30T12:00:00+00:00) holds site-1" in text
    assert "nothing was submitted" in text and "nvflare job abort j9" in text and "--allow-concurrent" in text
    Run.stdout = json.dumps({"holders": []}) + "\n"
    preflight.require_free_sites(["site-1"], AdminConsole(env_file="/nonexistent.env"))  # free: accepted
