"""submit_job.py hands make_job.py the job settings of .env and the environment, and its own unknown flags."""

import pytest


def test_env_settings_and_extra_flags_reach_make_job(monkeypatch, tmp_path):
    """submit_job holds no job defaults: every FL_* of .env and the environment (which wins) goes to make_job in the
    admin container, its unknown flags too (they win over both), and make_job takes its fields from them."""
    from fl_deploy import make_job, submit_job
    from fl_deploy.submit_job import staging

    for name in [n for n in __import__("os").environ if n.startswith("FL_")]:
        monkeypatch.delenv(name)
    env_file = tmp_path / ".env"
    env_file.write_text("FL_ROUNDS=5\nFL_LORA=1\nFL_TRANSFER=memory\nFL_IMAGE=gpt2-fl:test\n# FL_SEED=1\n")
    monkeypatch.setenv("FL_TRANSFER", "tensor")
    args = submit_job.parse_args(["--env-file", str(env_file), "--max_steps", "9", "--rounds", "6"])
    assert args.job_flags == ["--max_steps", "9", "--rounds", "6"]
    options = staging.job_environment(args.env_file)
    assert options[::2] == ["-e"] * (len(options) // 2)
    environ = dict(o.split("=", 1) for o in options[1::2])
    assert environ == {"FL_ROUNDS": "5", "FL_LORA": "1", "FL_TRANSFER": "tensor", "FL_IMAGE": "gpt2-fl:test"}
    job, train, _ = make_job.parse_args([*args.job_flags, "--sites", "site-1,site-2"], environ=environ)
    assert (job.rounds, job.transfer, train.lora, train.max_steps) == (6, "tensor", True, 9)


def test_submit_refuses_job_flags_with_a_job_folder(capsys):
    from fl_deploy import submit_job

    with pytest.raises(SystemExit) as e:
        submit_job.parse_args(["--job-folder", "jobs/gpt2-fedavg-stream", "--rounds", "2"])
    assert e.value.code == 2 and "cannot apply" in capsys.readouterr().err


@pytest.mark.parametrize("envelope, expected", [
    ({"status": "ok", "data": {"job_id": "j1"}}, "j1"),
    ({"status": "error", "message": "Authentication failed. — user not authorized for the action 'submit_job /tmp/x: "
      "user 'member@fl-demo.org' is not authorized for 'submit_job'' Check startup kit credentials."},
     "console 'admin-2' may not submit jobs that bring their own code"),
    ({"status": "error", "message": "job folder has no meta.json"}, "nvflare job submit: job folder has no meta.json"),
])
def test_submit_names_the_console_and_the_fix_when_refused(monkeypatch, tmp_path, envelope, expected):
    from fl_deploy import host
    from fl_deploy.host import AdminConsole, HostError
    from fl_deploy.submit_job import staging

    calls = []
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **kw: calls.append((a, kw)) or envelope)
    console = AdminConsole(service="admin-2", env_file=str(tmp_path / "none.env"))
    if envelope["status"] == "ok":
        assert staging.submit("/home/fl/jobs/x", console) == expected
    else:
        with pytest.raises(HostError, match="nothing was submitted") as e:
            staging.submit("/home/fl/jobs/x", console)
        assert expected in str(e.value)
        assert "Check startup kit credentials" not in str(e.value)  # NVFlare's wrapper misleads: the kit is fine
        if "not authorized" in envelope["message"]:
            assert "the server refused the job: user 'member@fl-demo.org' is not authorized for 'submit_job'." \
                in str(e.value)
    assert calls[0][0] == ("job", "submit", "-j", "/home/fl/jobs/x") and calls[0][1]["service"] == "admin-2"


def test_the_site_list_is_fetched_while_the_job_is_generated(monkeypatch):
    """One admin round trip (`nvflare system status`, 3-5 s) runs beside make_job/check_job, not after them; its
    answer still decides whether the job is submitted."""
    import threading
    import time

    from fl_deploy import submit_job

    asked, order = threading.Event(), []

    def site_status(console):
        order.append("status asked")
        asked.set()
        return {"status": "ok", "data": {"clients": [{"client_name": "site-1", "client_last_conn_time": time.time()}]}}

    def stage_job(console, *args):
        order.append("staging" + (" (status already asked)" if asked.wait(10) else " alone"))
        return "/home/fl/jobs/x", {"sites": ["site-1", "site-2"], "problems": []}, None

    for name, fake in {"check_docker": lambda: None, "site_status": site_status, "stage_job": stage_job}.items():
        monkeypatch.setattr(submit_job, name, fake)
    monkeypatch.setattr(submit_job.AdminConsole, "require", lambda self: None)
    monkeypatch.setattr(submit_job, "submit", lambda *a: pytest.fail("submitted a job whose site-2 is not connected"))
    removed = []
    monkeypatch.setattr(submit_job.disk_usage, "remove_in_admin", lambda path, *a: removed.append(path))
    assert submit_job.main([]) == 2
    assert removed == ["/home/fl/jobs/x"]  # a refused job's staged copy is removed too
    assert order == ["status asked", "staging (status already asked)"]


def fake_compose(stdout: str, returncode: int = 0, stderr: str = ""):
    calls = []

    def compose(*args, **kw):
        import subprocess

        calls.append(args)
        return subprocess.CompletedProcess(args, returncode, stdout, stderr)
    return compose, calls


def test_the_job_is_generated_and_checked_in_one_exec(monkeypatch, capsys):
    from fl_deploy import host
    from fl_deploy.host import AdminConsole
    from fl_deploy.submit_job import preflight, staging

    out = 'job folder: /home/fl/jobs/x (sites: site-1,site-2; rounds: 2)\n{"sites": ["site-1", "site-2"], "problems": []}\n'
    compose, calls = fake_compose(out)
    monkeypatch.setattr(host, "compose", compose)
    monkeypatch.setattr(staging, "job_environment", lambda env_file: ["-e", "FL_ROUNDS=2"])
    dest, report, _ = staging.stage_job(AdminConsole(), job_flags=["--max_steps", "5"])
    (call,) = calls
    assert call[:5] == ("exec", "-T", "-e", "FL_ROUNDS=2", "admin") and call[5:7] == ("sh", "-c")
    make, check = call[7].split(" && ")
    assert make == (f"python3 /src/scripts/make_job.py --out {dest} --project /src/project.yml --max_steps 5")
    assert check == f"python3 -m fl_deploy.check_job {dest} --imports --json"
    assert preflight.check_staged_job(report)["sites"] == ["site-1", "site-2"]
    assert capsys.readouterr().out.startswith("job folder: /home/fl/jobs/x")


def test_a_job_that_cannot_be_generated_is_named_and_not_checked(monkeypatch):
    from fl_deploy import host
    from fl_deploy.host import AdminConsole, HostError
    from fl_deploy.submit_job import staging

    compose, _ = fake_compose("", 2, "make_job.py: error: --rounds must be at least 1\n")
    monkeypatch.setattr(host, "compose", compose)
    with pytest.raises(HostError, match="could not generate the job: make_job.py: error: --rounds"):
        staging.stage_job(AdminConsole(), job_flags=["--rounds", "0"])


def test_a_staged_job_with_problems_is_not_submitted(monkeypatch):
    from fl_deploy import host
    from fl_deploy.host import AdminConsole, HostError
    from fl_deploy.submit_job import preflight, staging

    compose, _ = fake_compose('{"sites": ["site-1"], "problems": ["app_site/custom/fl_site/client.py is missing"]}\n', 2)
    monkeypatch.setattr(host, "compose", compose)
    _, report, _ = staging.stage_job(AdminConsole())
    with pytest.raises(HostError, match="incomplete, nothing was submitted:\n  app_site/custom"):
        preflight.check_staged_job(report)
