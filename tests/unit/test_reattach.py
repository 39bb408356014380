"""A job that outlives submit_job.py (Ctrl-C, a dropped session, --timeout) is re-attached with --follow JOB_ID:
the same follow, download, summary and abnormal-end report as for a job followed from its submission."""

import importlib
import subprocess
import sys

import pytest

from fl_deploy import host, submit_job
from fl_deploy.host import AdminConsole, HostError
from fl_deploy.submit_job import following

META = {"status": "ok", "data": {"job_id": "J7", "status": "FINISHED:COMPLETED", "submit_time": 1700000000.5,
                                 "deploy_map": {"app_server": ["server"], "app_site": ["site-1", "site-2"]}}}


def fake_host(monkeypatch, meta=META, status="FINISHED:COMPLETED", follow_error=None):
    """submit_job's host calls replaced; returns the record of what ran."""
    ran = []

    def follow(job_id, console, report, *args):
        ran.append(("follow", job_id))
        if follow_error:
            raise follow_error
        return status

    def download(job_id, console, results, sites, failed=False, resumed=None):
        ran.append(("download", job_id, tuple(sites), failed))
        return "/tmp/results/" + job_id, []

    fakes = {"check_docker": lambda: None,
             "stage_job": lambda console, *a: ran.append(("staged",)) or ("/home/fl/jobs/x", {"sites": ["site-1"],
                                                                                             "problems": []}, None),
             "site_status": lambda console: {"data": {"clients": [{"client_name": "site-1"}]}},
             "require_sites": lambda needs, console, status: ["site-1"],
             "require_free_sites": lambda *a: None, "submit": lambda *a: ran.append(("submitted",)) or "J1",
             "follow": follow, "download": download,
             "summarize": lambda dest, report: ran.append(("summary", dest)),
             "abnormal_end": lambda job_id, st, dest, errors, since, console: ran.append(("abnormal", st, since))}
    for name, fake in fakes.items():
        monkeypatch.setattr(submit_job, name, fake)
    monkeypatch.setattr(AdminConsole, "require", lambda self: None)
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **kw: ran.append(("nvflare", *a)) or meta)
    monkeypatch.setattr(submit_job.disk_usage, "remove_in_admin", lambda path, *a: ran.append(("removed", path)))
    return ran


def test_follow_reattaches_and_finishes_like_a_followed_job(monkeypatch):
    """--follow J7: nothing staged or submitted; the job is followed, downloaded with its sites' logs, summarised."""
    ran = fake_host(monkeypatch)
    assert submit_job.main(["--follow", "J7"]) == 0
    assert ("nvflare", "job", "meta", "J7") in ran
    assert ("staged",) not in ran and ("submitted",) not in ran
    assert [r for r in ran if r[0] != "nvflare"] == [("follow", "J7"), ("download", "J7", ("site-1", "site-2"), False),
                                                     ("summary", "/tmp/results/J7")]


def test_a_reattached_failed_job_is_summarised_by_its_cause_since_its_submission(monkeypatch):
    ran = fake_host(monkeypatch, status="FINISHED:EXECUTION_EXCEPTION")
    assert submit_job.main(["--follow", "J7"]) == 1
    assert ("abnormal", "FINISHED:EXECUTION_EXCEPTION", 1700000000.5) in ran  # Docker's events from the submission on


def test_follow_of_a_job_the_server_does_not_know_says_so(monkeypatch, capsys):
    ran = fake_host(monkeypatch, meta={"status": "error", "message": "job J9 does not exist"})
    assert submit_job.main(["--follow", "J9"]) == 2
    err = capsys.readouterr().err
    assert "the server has no job J9 (job J9 does not exist)" in err and "nvflare job list" in err
    assert not [r for r in ran if r[0] == "follow"]


def test_ctrl_c_while_following_says_how_to_reattach(monkeypatch, capsys):
    fake_host(monkeypatch, follow_error=KeyboardInterrupt())
    assert submit_job.main([]) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C or SIGTERM); job J1 keeps running on the server" in err
    assert "python3 scripts/submit_job.py --follow J1" in err and "nvflare job abort J1" in err


def test_ctrl_c_before_a_job_exists_is_a_plain_interrupt(monkeypatch):
    fake_host(monkeypatch)
    monkeypatch.setattr(submit_job, "stage_job", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        submit_job.main([])


def test_the_timeout_says_how_to_reattach(monkeypatch):
    """--timeout stops the follower, not the job: the error names the re-attach command."""
    real_popen = subprocess.Popen
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(following.subprocess, "Popen", lambda cmd, **kw: real_popen(slow, **kw))
    with pytest.raises(HostError) as e:
        following.follow("J3", AdminConsole(), following.Reporter(), timeout_s=0.5)
    assert "still running after --timeout 0.5 s; job J3 keeps running" in str(e.value)
    assert "python3 scripts/submit_job.py --follow J3" in str(e.value)


@pytest.mark.parametrize("flags", [["--resume", "J1"], ["--job-folder", "jobs/x"], ["--rounds", "2"]])
def test_follow_takes_no_job_making_flags(flags, capsys):
    with pytest.raises(SystemExit) as e:
        submit_job.parse_args(["--follow", "J7", *flags])
    assert e.value.code == 2 and f"--follow re-attaches to job J7 as it was submitted: {flags[0]}" \
        in capsys.readouterr().err


def test_an_interrupted_download_leaves_no_copy_in_the_admin_volume(monkeypatch, tmp_path):
    """Ctrl-C (or SIGTERM, which scripts/submit_job.py turns into it) during the copy out of the admin container: the
    job's download is still removed from the admin's volume and transfer folder, and the interrupt goes on up."""
    download_mod = importlib.import_module("fl_deploy.submit_job.download")  # the package exports its function
    removed = []

    class Console:
        service, env_file, kit = "admin", None, "/home/fl/admin-kit"

        def nvflare(self, *args, check=True):
            return {"status": "ok", "data": {"download_path": "/workspace/downloads/J9"}}

        def exec(self, *cmd, check=True):
            return subprocess.CompletedProcess(cmd, 0, "", "")

        def compose(self, *args, **kw):
            raise KeyboardInterrupt

    monkeypatch.setattr(download_mod.disk_usage, "remove_in_admin",
                        lambda path, admin, env_file=None, job_id=None: removed.append((path, admin, job_id)))
    with pytest.raises(KeyboardInterrupt):
        download_mod.download("J9", Console(), str(tmp_path), ["site-1"])
    assert removed == [("/workspace/downloads/J9", "admin", "J9")]
