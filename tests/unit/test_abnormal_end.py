"""A job that ends abnormally: its cause as far as the server and Docker know, the next step, a summary that names
only what exists; a resumed job's results carry the whole run (fl_deploy/diagnose.py, lineage.py, submit_job.py)."""

import json
import os
import subprocess

import pytest

from fl_deploy import diagnose, lineage


class Run:
    def __init__(self, stdout="", returncode=0, stderr=""):
        self.stdout, self.returncode, self.stderr = stdout, returncode, stderr


def test_docker_events_become_causes():
    text = "\n".join(json.dumps(e) for e in [
        {"Action": "oom", "timeNano": 1796082400_500000000,
         "Actor": {"Attributes": {"com.docker.compose.service": "server", "name": "p-server-1"}}},
        {"Action": "die", "time": 1796082401,
         "Actor": {"Attributes": {"com.docker.compose.service": "site-2", "exitCode": "137"}}},
        {"status": "restart", "time": 1796082402, "Actor": {"Attributes": {"name": "p-site-2-1"}}},
    ]) + "\nnot json\n"
    events = diagnose.parse_events(text)
    assert [(e["service"], e["action"]) for e in events] == [("server", "oom"), ("site-2", "die"),
                                                              ("p-site-2-1", "restart")]
    assert events[0]["time"] == pytest.approx(1796082400.5)
    facts = diagnose.describe(-9, events)
    assert facts[0] == ("the server's job process ended with signal SIGKILL (SIGKILL: the kernel's OOM killer, "
                        "or kill -9)")
    assert facts[1].startswith("Docker recorded an out-of-memory kill in the server container at ")
    assert "the site-2 container stopped at" in facts[2] and "(exit code 137)" in facts[2]
    assert facts[3].startswith("Docker restarted the p-site-2-1 container")
    assert diagnose.describe(None, []) == []
    assert diagnose.describe(1, []) == ["the server's job process ended with exit code 1"]
    assert diagnose.describe(1, [], runner_finished=True) == ["the server's job process ended with exit code 1"]


def test_a_killed_job_process_is_named_although_nvflare_records_exit_code_1():
    """NVFlare 2.9's launcher maps -9 to 1 (EXECUTION_ERROR): the job's log, cut before its runner's last line,
    tells a kill from a job that failed by itself."""
    (fact,) = diagnose.describe(1, [], runner_finished=False)
    assert fact.startswith("the server's job process was killed: it ended (NVFlare records exit code 1) before its "
                           "runner's last log line ('Server runner finished.')")
    assert "SIGKILL (the kernel's OOM killer, or kill -9)" in fact
    # A signal the launcher passed through stays what it is, whatever the log says.
    assert diagnose.describe(-9, [], runner_finished=False)[0].startswith("the server's job process ended with signal")


def test_job_runner_finished_reads_the_downloaded_jobs_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("2026-12-01 03:36:02,957 - ServerRunner - INFO - round 1 done\n")
    assert diagnose.job_runner_finished(str(log)) is False
    log.write_text(log.read_text() + "2026-12-01 03:36:09,001 - ServerRunner - INFO - Server runner finished.\n")
    assert diagnose.job_runner_finished(str(log)) is True
    assert diagnose.job_runner_finished(str(tmp_path / "missing.txt")) is None


def test_next_step_offers_resume_only_when_a_round_was_saved(monkeypatch):
    from fl_deploy import checkpoints

    monkeypatch.setattr(checkpoints, "compose", lambda *a, **k: Run(json.dumps(
        {"completed_round": 1, "checkpoint": "/workspace/checkpoints/j1/FL_global_model.pt"})))
    assert checkpoints.saved_round("j1") == 2
    assert diagnose.next_step("j1", 2) == ("the server saved the global model after round 2: once the cause is fixed, "
                                           "continue from there with: python3 scripts/submit_job.py --resume j1")
    monkeypatch.setattr(checkpoints, "compose", lambda *a, **k: Run("", returncode=1))
    assert checkpoints.saved_round("j1") is None
    assert "no round was saved" in diagnose.next_step("j1", None) and "--resume" not in diagnose.next_step("j1", None)


def test_job_process_exit_reads_the_servers_own_line(monkeypatch):
    calls = []
    line = "2026-11-30 23:50:44,238 - ServerEngine - INFO - Job: j1 child process exit with return code -9\n"
    monkeypatch.setattr(diagnose, "compose", lambda *a, **k: calls.append(a) or Run(line))
    assert diagnose.job_process_exit("j1") == -9
    assert calls[0][:4] == ("exec", "-T", "server", "grep")


def test_failed_job_summary_names_only_what_exists(monkeypatch, tmp_path, capsys):
    """A job that failed before the server saved a global model: no pointer to a model or plots never written."""
    from fl_deploy import checkpoints
    from fl_deploy.host import AdminConsole
    from fl_deploy.submit_job.abnormal_end import abnormal_end
    from fl_deploy.submit_job.following import Reporter
    from fl_deploy.submit_job.summary import summarize

    dest = tmp_path / "results" / "j1"
    (dest / "workspace").mkdir(parents=True)
    (dest / "workspace" / "log.txt").write_text("...")
    (dest / "site_errors").mkdir()
    for module in (diagnose, checkpoints):  # no exit line, no checkpoint
        monkeypatch.setattr(module, "compose", lambda *a, **k: Run("", returncode=1))
    monkeypatch.setattr(diagnose, "docker_events", lambda *a: [])
    from fl_deploy import disk_usage, site_failure

    monkeypatch.setattr(site_failure, "compose", lambda *a, **k: Run("", returncode=1))  # no site failed it
    monkeypatch.setattr(disk_usage, "compose", lambda *a, **k: Run("", returncode=1))  # no df: volume unknown
    abnormal_end("j1", "FINISHED:EXECUTION_EXCEPTION", str(dest),
                 ["site-1: data.DataError: dataset path '/data/imdb' does not exist",
                  "site-2: data.DataError: dataset path '/data/imdb' does not exist"],
                 0.0, AdminConsole(env_file="/nonexistent.env"))
    summarize(str(dest), Reporter())
    out = capsys.readouterr()
    text = out.out + out.err
    assert "error: job j1 ended FINISHED:EXECUTION_EXCEPTION." in text
    assert "cause: neither the server's job process nor Docker recorded a crash" in text
    assert "site-1: data.DataError: dataset path '/data/imdb' does not exist" in text
    assert "next: no round was saved: fix the cause, then submit the job again" in text
    assert "site_errors/" in text
    for absent in ("global model:", "plots", "metrics:", "global_model", "--resume"):
        assert absent not in text, (absent, text)


def test_completed_job_summary_points_at_what_was_written(tmp_path, capsys):
    from fl_deploy.submit_job.following import Reporter
    from fl_deploy.submit_job.summary import summarize

    dest = tmp_path / "j2"
    for folder in ("global_model", "plots", "site_logs/site-1", "workspace/tb_events", "workspace/metrics"):
        (dest / folder).mkdir(parents=True)
    (dest / "plots" / "train_loss.png").write_bytes(b"png")
    (dest / "metrics.csv").write_text("round\n")
    (dest / "workspace" / "metrics" / "round_metrics.jsonl").write_text(json.dumps(
        {"round": 0, "aggregated_metrics": [{"name": "train_loss", "value": 1.25}]}) + "\n")
    summarize(str(dest), Reporter())
    text = capsys.readouterr().out
    assert "round 1: train_loss=1.2500" in text
    for present in ("global model:", "plots:", "train_loss.png", "metrics:", "site logs:", "site-1", "tensorboard:"):
        assert present in text, (present, text)


def round_record(rnd: int, loss: float) -> str:
    return json.dumps({"round": rnd, "aggregated_metrics": [{"name": "train_loss", "value": loss}], "sites": []})


def test_resumed_job_result_carries_the_earlier_rounds(tmp_path, monkeypatch):
    """Job C resumed B (from round 4), which resumed A (from round 2). B was downloaded (its result holds A's rounds
    already); A's run folder is gone. C's result gets rounds 1..3 from B's result, and B's TensorBoard files."""
    results = tmp_path / "results"
    b = results / "job-b"
    (b / "workspace" / "metrics").mkdir(parents=True)
    (b / "workspace" / "metrics" / "round_metrics.jsonl").write_text(
        round_record(1, 4.0) + "\n" + round_record(2, 3.0) + "\n" + round_record(3, 2.9) + "\n")
    (b / lineage.EARLIER).write_text(round_record(0, 5.0) + "\n")
    (b / "workspace" / "tb_events" / "site-1").mkdir(parents=True)
    (b / "workspace" / "tb_events" / "site-1" / "events.out.tfevents.1.b").write_bytes(b"b")
    (b / "workspace" / "tb_events" / "site-1" / "earlier-job-a-events.out.tfevents.1.a").write_bytes(b"a")
    c = results / "job-c"
    (c / "workspace" / "tb_events" / "site-1").mkdir(parents=True)
    monkeypatch.setattr(lineage, "compose", lambda *a, **k: pytest.fail("B's result is local: no server call"))
    jobs = lineage.add_earlier_rounds(str(c), "job-b", 4, str(results))
    assert jobs == ["job-b"]
    earlier = [json.loads(line) for line in (c / lineage.EARLIER).read_text().splitlines()]
    assert [(r["round"], r["aggregated_metrics"][0]["value"]) for r in earlier] == [(0, 5.0), (1, 4.0), (2, 3.0)]
    assert json.loads((c / lineage.RESUMED_FROM).read_text()) == {"first_round": 4, "jobs": ["job-b"]}
    assert sorted(os.listdir(c / "workspace" / "tb_events" / "site-1")) == [
        "earlier-job-a-events.out.tfevents.1.a", "earlier-job-b-events.out.tfevents.1.b"]
    assert not (c / ".earlier").exists()


def test_resume_after_a_server_restart_reads_the_run_folder_on_the_server(tmp_path, monkeypatch):
    """Job A was cut short by a server restart (never downloaded): its rounds come from its run folder on the
    server volume, and its server configuration leads to the job it resumed itself (Z, downloaded)."""
    results = tmp_path / "results"
    z_id = "9a8b7c6d-0000-4000-8000-000000000001"
    z = results / z_id
    (z / "workspace" / "metrics").mkdir(parents=True)
    (z / "workspace" / "metrics" / "round_metrics.jsonl").write_text(round_record(0, 6.0) + "\n")
    a_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    run_folder = tmp_path / "server" / a_id
    (run_folder / "metrics").mkdir(parents=True)
    (run_folder / "metrics" / "round_metrics.jsonl").write_text(round_record(1, 5.0) + "\n" + round_record(2, 4.5) + "\n")
    (run_folder / "app_server" / "config").mkdir(parents=True)
    (run_folder / "app_server" / "config" / "config_fed_server.json").write_text(json.dumps(
        {"components": [{"id": "persistor", "args": {
            "source_ckpt_file_full_name": f"/workspace/checkpoints/{z_id}/FL_global_model.pt"}}]}))
    tar = subprocess.run(["tar", "-C", str(run_folder), "-c", "metrics", "app_server/config"], capture_output=True,
                         check=True).stdout
    calls = []
    monkeypatch.setattr(lineage, "compose", lambda *a, **k: calls.append(a) or Run(tar))
    c = results / "job-c"
    c.mkdir()
    assert lineage.add_earlier_rounds(str(c), a_id, 3, str(results)) == [a_id, z_id]
    earlier = [json.loads(line)["round"] for line in (c / lineage.EARLIER).read_text().splitlines()]
    assert earlier == [0, 1]  # round 2 (index 2) is the one C ran again: A's partial record of it is dropped
    assert calls[0][:3] == ("exec", "-T", "server") and f"/workspace/{a_id}" in calls[0][-1]


def test_started_from_reads_the_checkpoint_job(tmp_path):
    config = tmp_path / "config_fed_server.json"
    config.write_text(json.dumps({"components": [{"id": "persistor", "args": {
        "source_ckpt_file_full_name": "/workspace/checkpoints/1b4e28ba-2fa1-11d2-883f-0016d3cca427/FL_global_model.pt"}}]}))
    assert lineage.started_from(str(config)) == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    config.write_text(json.dumps({"components": [{"id": "persistor", "args": {}}]}))
    assert lineage.started_from(str(config)) is None


def test_a_sites_error_comes_from_its_streamed_log_when_its_error_log_is_late(tmp_path):
    """Sites send error_log.txt once their job process has ended, which can be after the download: the site's
    job log, streamed while the job ran, holds the same ERROR records and traceback."""
    from fl_deploy.admin.job_errors import problems

    (tmp_path / "site_logs" / "site-2").mkdir(parents=True)
    (tmp_path / "site_logs" / "site-2" / "log.txt").write_text(
        "2026-12-01 02:06:31,000 - TaskScriptRunner - INFO - site-2: loading\n"
        "2026-12-01 02:06:32,098 - TaskScriptRunner - ERROR - Traceback (most recent call last):\n"
        '  File "client.py", line 1, in <module>\n'
        "fl_site.data.DataError: dataset path '/assets/no-such-imdb' does not exist\n")
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / "error_log.txt").write_text(
        "2026-12-01 02:06:32,285 - ServerRunner - ERROR - Aborting current RUN: Result from site-1 is bad\n")
    lines = problems({"site-1": "2026-12-01 02:06:30,000 - TaskScriptRunner - ERROR - boom\n"}, str(tmp_path))
    assert lines == ["server: Aborting current RUN: Result from site-1 is bad", "site-1: boom",
                     "site-2: fl_site.data.DataError: dataset path '/assets/no-such-imdb' does not exist"]
    assert problems({}, str(tmp_path / "nothing")) == []
