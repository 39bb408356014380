"""Site job logs worth streaming: no bytecode from dill under NVFlare's print redirect; provisioning turns on the
kits' own live log streaming (fl_deploy/provision_builders.py)."""

import builtins
import json
import logging
import os

import pytest


def tokenize(example):
    """Stands in for the function `datasets` hashes when TRL's SFTTrainer prepares a dataset."""
    return json.dumps(example) + str(len(example))


@pytest.fixture
def nvflare_print_redirect():
    """NVFlare's TaskScriptRunner redirect as the in-process client runs under it; its log records collected."""
    from nvflare.app_common.executors import task_script_runner as runner

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect()
    runner.TaskScriptRunner.logger.addHandler(handler)
    level = runner.TaskScriptRunner.logger.level
    runner.TaskScriptRunner.logger.setLevel(logging.INFO)
    saved = builtins.print
    runner._enable_print_redirect()
    try:
        yield records
    finally:
        runner._disable_print_redirect()
        builtins.print = saved
        runner.TaskScriptRunner.logger.removeHandler(handler)
        runner.TaskScriptRunner.logger.setLevel(level)


def test_nvflare_redirect_puts_dills_bytecode_in_the_job_log(nvflare_print_redirect):
    """The cause, kept as a test: under NVFlare's redirect dill's dis.dis output goes to the job log (as
    'TaskScriptRunner - INFO - ... LOAD_...' records) instead of dill's buffer, and dill finds no globals."""
    import dill.detect

    assert dill.detect.nestedglobals(tokenize.__code__) == []
    assert any("LOAD_" in r or "RESUME" in r for r in nvflare_print_redirect), nvflare_print_redirect[:5]


def test_print_keeps_its_destinations_under_nvflares_redirect(nvflare_print_redirect, capsys):
    import io
    import sys

    import dill.detect
    from fl_site.print_redirect import keep_print_destinations

    keep_print_destinations()
    keep_print_destinations()  # idempotent: one wrapper
    assert sorted(dill.detect.nestedglobals(tokenize.__code__)) == ["json", "len", "str"]
    assert nvflare_print_redirect == []  # no bytecode in the job log
    buffer = io.StringIO()
    print("to a file", file=buffer)
    assert buffer.getvalue() == "to a file\n" and nvflare_print_redirect == []
    print("status line")  # a plain print still goes to the job log, as NVFlare intends
    assert nvflare_print_redirect == ["status line"]
    print("explicit stdout", file=sys.stdout)
    assert nvflare_print_redirect[-1] == "explicit stdout"


def test_provisioning_turns_on_live_site_logs(tmp_path):
    """project.yml's builders give every site a SiteLogStreamer for log.txt ahead of the kit's error-log streamer,
    and point the server's JobLogReceiver at its workspace (where `nvflare job logs` reads a running job)."""
    from fl_deploy.harness import local_federation
    from fl_deploy.project import load_project
    from fl_deploy.provision import provision

    local_federation.write_project(str(tmp_path / "project.yml"), 8002, ["site-1", "site-2"])
    kits = provision(load_project(str(tmp_path / "project.yml")), str(tmp_path / "ws"), str(tmp_path / "store"),
                     force=False, service_uid=0)

    def components(kit, name="resources.json.default"):
        with open(os.path.join(kits[kit], "local", name)) as f:
            return json.load(f)["components"]

    for site in ("site-1", "site-2"):
        streamers = [c for c in components(site) if c["path"].endswith("SiteLogStreamer")]
        assert [c["args"]["log_file_name"] for c in streamers] == ["log.txt", "error_log.txt"]
    for name in ("resources.json.default", "resources.json"):  # the server's active copy too (storage override)
        receivers = [c for c in components("localhost", name) if c["path"].endswith("JobLogReceiver")]
        assert [c["args"] for c in receivers] == [{"dest_dir": "{$NVFL_WORKSPACE}"}]


def test_nvflare_resolves_the_workspace_reference_from_the_environment(monkeypatch, tmp_path):
    """The receiver's dest_dir is resolved by NVFlare's own config loader when the server starts: the workspace
    with NVFL_WORKSPACE set (the image, local_federation), the receiver's default (None: the temp folder) without."""
    from nvflare.fuel.utils.json_scanner import JsonScanner
    from nvflare.fuel.utils.wfconf import resolve_var_refs

    from fl_deploy.provision_builders import WORKSPACE_REF

    def resolved():
        config = {"components": [{"id": "log_receiver", "args": {"dest_dir": WORKSPACE_REF}}]}
        resolve_var_refs(JsonScanner(config), {})
        return config["components"][0]["args"]["dest_dir"]

    monkeypatch.setenv("NVFL_WORKSPACE", str(tmp_path))
    assert resolved() == str(tmp_path)
    monkeypatch.delenv("NVFL_WORKSPACE")
    assert resolved() is None


def test_live_job_logs_accepts_only_what_nvflare_job_logs_reads():
    from fl_deploy.provision_builders import LiveJobLogs

    assert LiveJobLogs("log.json").log_file_name == "log.json"
    with pytest.raises(ValueError, match="log.txt or log.json"):
        LiveJobLogs("error_log.txt")
