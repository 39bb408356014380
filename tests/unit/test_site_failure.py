"""A site's job process that ends a job (OOM-killed, killed, crashed) is named with its cause from what the server
holds: its log.txt and the logs the sites streamed to it (fl_deploy/site_failure.py)."""

from fl_deploy import site_failure

JOB = "5e1f-job"
SERVER_LOG = (
    "2026-12-04 02:34:24,865 - FederatedServer - INFO - Failing job other-job due to reported failure from site-1: "
    "exception\n"
    f"2026-12-04 02:34:24,865 - FederatedServer - INFO - Failing job {JOB} due to reported failure from "
    f"site-2.{JOB}: exception\n"
    f"2026-12-04 02:34:25,001 - FederatedServer - INFO - Failing job {JOB} due to reported failure from site-2: "
    "exception\n")
CUT = ("2026-12-04 02:39:19,040 - ClientRunner - INFO - [identity=site-2, run=x, peer=itest] - got task assignment: "
       "name=train\n")
CRASH = CUT + "Traceback (most recent call last):\n  File \"client.py\", line 3\nRuntimeError: boom\n"


class Run:
    def __init__(self, stdout="", returncode=0):
        self.stdout, self.returncode = stdout, returncode


def result_with(tmp_path, site, text, where="workspace"):
    folder = tmp_path / "result" / where / site
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text(text)
    return str(tmp_path / "result")


def test_the_site_that_failed_the_job_is_read_from_the_servers_log():
    """Only this job's reports, one per site, its FQCN read as the site."""
    assert site_failure.reported_failures(SERVER_LOG, JOB) == [("site-2", "exception")]
    assert site_failure.reported_failures(SERVER_LOG, "another") == []


def test_a_killed_job_process_is_named_killed_with_the_oom_advice(tmp_path):
    for where in ("workspace", "site_logs"):  # NVFlare's download, or job_errors.py's copy
        dest = result_with(tmp_path / where, "site-2", CUT, where)
        [fact] = site_failure.describe([("site-2", "exception")], dest)
        assert fact.startswith("site-2's job process ended while the job ran, site-2 itself staying up")
        assert "stops at '2026-12-04 02:39:19,040 - ClientRunner - INFO - got task assignment: name=train'" in fact
        assert "the process was killed: SIGKILL, as the kernel's OOM killer sends" in fact
        assert "a smaller --batch_size, or more memory for site-2" in fact


def test_a_crashed_job_process_is_not_called_killed(tmp_path):
    [fact] = site_failure.describe([("site-2", "exception")], result_with(tmp_path, "site-2", CRASH))
    assert "it crashed: its error is below" in fact and "killed" not in fact


def test_without_its_log_both_causes_are_named(tmp_path):
    [fact] = site_failure.describe([("site-2", "exception")], str(tmp_path))
    assert "none of its job log reached the server: killed (SIGKILL" in fact and "or crashed" in fact


def test_the_abnormal_end_names_the_site_first(monkeypatch, tmp_path, capsys):
    dest = result_with(tmp_path, "site-2", CUT)
    monkeypatch.setattr(site_failure, "compose", lambda *a, **k: Run(SERVER_LOG))
    from fl_deploy import checkpoints, diagnose, disk_usage
    from fl_deploy.host import AdminConsole
    from fl_deploy.submit_job.abnormal_end import abnormal_end

    for module in (diagnose, checkpoints, disk_usage):
        monkeypatch.setattr(module, "compose", lambda *a, **k: Run("", returncode=1))
    monkeypatch.setattr(diagnose, "docker_events", lambda *a: [])
    abnormal_end(JOB, "FINISHED:EXECUTION_EXCEPTION", dest, [], 0.0, AdminConsole(env_file="/nonexistent.env"))
    err = capsys.readouterr().err
    assert err.splitlines()[1].startswith("  cause: site-2's job process ended while the job ran"), err
    assert "neither the server's job process nor Docker" not in err
