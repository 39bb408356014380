"""fl_deploy/timeline.py: submit -> first step, from job logs as `nvflare job logs --sites all` returns them."""

import json

import pytest

from fl_deploy import submit_job, timeline
from fl_deploy.timeline import log_time


def record(time, message):
    return json.dumps({"asctime": time, "name": "x", "levelname": "INFO", "message": message})


SERVER = "\n".join([
    record("2026-11-30 23:50:21,300", "Worker_process started."),
    record("2026-11-30 23:50:24,000", "Round 0 started."),
    record("2026-11-30 23:50:31,250", "Round 1 started."),
])


def site(offset_s: float, tokenised=True) -> str:
    def t(s):
        return f"2026-11-30 23:50:{22 + offset_s + s:06.3f}".replace(".", ",")
    lines = [record(t(0), "Worker_process started."),
             record(t(3.5), "site-1: shard 0/2, 200 train rows (fingerprint 95f6ee032c16), 16 held-out rows")]
    if tokenised:
        lines.append(record(t(4.0), "site-1: trainer ready, 200 rows tokenised"))
    lines += [record(t(4.4), "site-1: round 0 received 28 tensors"),
              record(t(5.0), "{'eval_loss': '5.99', 'eval_runtime': '1.031'}"),
              record(t(6.0), "{'loss': '5.764', 'grad_norm': '3.13'}"),
              record(t(6.1), "{'loss': '5.758', 'grad_norm': '3.014'}")]
    return "\n".join(lines)


def test_events_take_each_from_its_log_and_the_slowest_site():
    started = log_time("2026-11-30 23:50:10,000", utc=True)
    meta = {"submit_time": log_time("2026-11-30 23:50:20,500", utc=True)}
    events = dict(timeline.events(started, meta, {"server": SERVER, "site-1": site(0), "site-2": site(1.5)}))
    rel = {label: round(t - started, 2) for label, t in events.items()}
    assert rel == {
        "submit_job.py started": 0.0,
        "job received by the server": 10.5,
        "job running on the server": 11.3,
        "site job process up (slowest of 2)": 13.5,
        "site data loaded (slowest of 2)": 17.0,
        "site data tokenised (slowest of 2)": 17.5,
        "site global model received (slowest of 2)": 17.9,
        "site first optimizer step (slowest of 2)": 19.5,
        "round 1 end": 21.25,
    }


def test_older_client_code_without_the_trainer_ready_line_falls_back_to_the_model_receipt():
    found = timeline.site_events(timeline.log_records(site(0, tokenised=False)))
    assert found["site data tokenised"] == found["site global model received"]


def test_a_site_missing_an_event_leaves_it_unknown_not_the_other_sites_time():
    started = log_time("2026-11-30 23:50:10,000", utc=True)
    partial = "\n".join(site(0).splitlines()[:2])  # this site never got to train
    events = dict(timeline.events(started, {}, {"server": SERVER, "site-1": site(0), "site-2": partial}))
    assert events["site first optimizer step (slowest of 2)"] is None
    assert events["job received by the server"] is None
    text = timeline.report("j1", timeline.events(started, {}, {"server": SERVER, "site-1": site(0)}))
    assert "job received by the server: not in the logs" in text
    assert "submit -> first optimizer step: 18.0 s" in text


def test_plain_text_log_lines_parse_too_and_times_can_be_local():
    raw = "2026-11-30 23:50:27,729 - TaskScriptRunner - INFO - site-1: shard 0/2, 200 train rows (f 1), 16 rows\n"
    (t, msg), = timeline.log_records(raw, utc=False)
    assert msg.startswith("site-1: shard 0/2") and t == log_time("2026-11-30 23:50:27,729", utc=False)


def test_report_gives_seconds_since_submit_and_each_step():
    started = log_time("2026-11-30 23:50:10,000", utc=True)
    text = timeline.report("abc", timeline.events(started, {}, {"server": SERVER, "site-1": site(0)}))
    lines = text.splitlines()
    assert lines[0].startswith("timeline of job abc")
    assert lines[3].split() == ["11.3", "+11.3", "job", "running", "on", "the", "server"]
    assert lines[4].split()[:2] == ["12.0", "+0.7"]


def test_collect_asks_for_all_logs_then_for_each_site_that_was_missing():
    calls = []
    meta = {"submit_time": 1796082620.5, "deploy_map": {"app_server": ["server"], "app_site": ["site-1", "site-2"]}}

    def nvflare(*cli):
        calls.append(cli)
        if cli[1] == "meta":
            return {"status": "ok", "data": meta}
        if cli[4] == "all":  # site-2's log.json is not in the server's store
            return {"status": "ok", "data": {"logs": {"server": SERVER, "site-1": site(0)},
                                             "unavailable": {"site-2": "client log stream not available"}}}
        return {"status": "ok", "data": {"logs": {"site-2": site(1.5)}}}

    events = dict(timeline.collect("j1", nvflare, started=1796082610.0))
    assert calls == [("job", "meta", "j1"), ("job", "logs", "j1", "--sites", "all", "--tail", "100000"),
                     ("job", "logs", "j1", "--sites", "site-2", "--tail", "100000")]
    assert events["job received by the server"] == 1796082620.5
    assert events["site first optimizer step (slowest of 2)"] == log_time("2026-11-30 23:50:29,500", utc=True)


def test_submit_job_takes_timeline_as_its_own_flag_not_a_job_setting():
    args = submit_job.parse_args(["--timeline", "--rounds", "2"])
    assert args.timeline is True and args.job_flags == ["--rounds", "2"]
    assert submit_job.parse_args([]).timeline is False


@pytest.mark.parametrize("stamp", ["2026-11-30 23:50:21,893"])
def test_log_time_is_utc_by_default_in_containers(stamp):
    assert log_time(stamp, utc=True) == 1796082621.893


def test_a_site_the_server_has_no_log_of_is_read_where_it_runs():
    meta = {"deploy_map": {"app_server": ["server"], "app_site": ["site-1", "site-2"]}}

    def nvflare(*cli):
        if cli[1] == "meta":
            return {"status": "ok", "data": meta}
        return {"status": "ok", "data": {"logs": {"server": SERVER}}}

    read = []

    def site_log(name, job_id):
        read.append((name, job_id))
        plain = [f"{json.loads(r)['asctime']} - x - INFO - {json.loads(r)['message']}" for r in site(0).splitlines()]
        return "\n".join(plain) if name == "site-1" else None

    events = dict(timeline.collect("j1", nvflare, started=1796082610.0, site_log=site_log))
    assert read == [("site-1", "j1"), ("site-2", "j1")]
    # site-2's log is nowhere: the slowest site's step is unknown, never the other site's time
    assert events["site first optimizer step (slowest of 2)"] is None
    meta["deploy_map"]["app_site"] = ["site-1"]
    events = dict(timeline.collect("j1", nvflare, started=1796082610.0, site_log=site_log))
    assert events["site first optimizer step"] == log_time("2026-11-30 23:50:28,000", utc=True)
