"""submit_job.py turns .env settings into make_job.py flags: every flag it passes must be one make_job accepts."""

import pytest


@pytest.mark.parametrize("env, expected", [
    ({}, ["--transfer", "offload"]),
    ({"FL_LORA": "1", "FL_EXCHANGE_DTYPE": "bfloat16", "FL_TRANSFER": "tensor"},
     ["--lora", "--transfer", "tensor", "--exchange_dtype", "bfloat16"]),
])
def test_env_settings_become_make_job_flags(monkeypatch, tmp_path, env, expected):
    from fl_deploy import job as make_job
    from fl_deploy import submit as submit_job

    for name in ["FL_LORA", "FL_EXCHANGE_DTYPE", "FL_TRANSFER", *submit_job.JOB_SETTINGS]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = submit_job.parse_args(["--env-file", str(tmp_path / "none.env")])
    flags = submit_job.make_job_flags(args)
    for flag in expected:
        assert flag in flags, flags
    if "--exchange_dtype" in expected:
        assert flags[flags.index("--exchange_dtype") + 1] == "bfloat16"
    parsed = make_job.parse_args(flags + ["--out", str(tmp_path / "job"), "--sites", "site-1,site-2"])
    assert parsed.lora == ("--lora" in expected)
    assert parsed.transfer == env.get("FL_TRANSFER", "offload")
    assert flags[flags.index("--transfer") + 1] == parsed.transfer
    assert parsed.exchange_dtype == env.get("FL_EXCHANGE_DTYPE", "float32")


@pytest.mark.parametrize("envelope, expected", [
    ({"status": "ok", "data": {"job_id": "j1"}}, "j1"),
    ({"status": "error", "message": "Authentication failed. — user not authorized for the action 'submit_job /tmp/x: "
      "user 'member@fl-demo.org' is not authorized for 'submit_job'' Check startup kit credentials."},
     "console 'admin-2' may not submit jobs that bring their own code"),
    ({"status": "error", "message": "job folder has no meta.json"}, "nvflare job submit: job folder has no meta.json"),
])
def test_submit_names_the_console_and_the_fix_when_refused(monkeypatch, tmp_path, envelope, expected):
    from fl_deploy import submit as submit_job
    from fl_deploy.host import HostError

    calls = []
    monkeypatch.setattr(submit_job, "admin_nvflare", lambda *a, **kw: calls.append((a, kw)) or envelope)
    args = submit_job.parse_args(["--env-file", str(tmp_path / "none.env"), "--admin", "admin-2"])
    if envelope["status"] == "ok":
        assert submit_job.submit("/home/fl/jobs/x", args) == expected
    else:
        with pytest.raises(HostError, match="nothing was submitted") as e:
            submit_job.submit("/home/fl/jobs/x", args)
        assert expected in str(e.value)
        assert "Check startup kit credentials" not in str(e.value)  # NVFlare's wrapper misleads: the kit is fine
        if "not authorized" in envelope["message"]:
            assert "the server refused the job: user 'member@fl-demo.org' is not authorized for 'submit_job'." \
                in str(e.value)
    assert calls[0][0] == ("job", "submit", "-j", "/home/fl/jobs/x") and calls[0][1]["service"] == "admin-2"
