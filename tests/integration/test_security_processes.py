"""What a federation refuses: a site from another provisioning (another root CA), an admin whose role may not
submit custom code. Real processes and real mTLS, on loopback."""

import os
import subprocess
import time

import pytest

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
MEMBER = "member@test.org"


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("secfed"))
    with local_federation.ProcessFederation(root, SITES, extra_admins=((MEMBER, "member"),)) as fed:
        yield fed


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_site_from_another_ca_is_rejected(federation, tmp_path):
    from fl_deploy import provision
    from fl_deploy.project import load_project

    # Same project shape, same server name and port, even the same site name: only the root CA differs.
    rogue_project = str(tmp_path / "rogue.yml")
    local_federation.write_project(rogue_project, federation.port, ["site-1"], name="rogue")
    kit = provision.provision(load_project(rogue_project), str(tmp_path / "ws"), str(tmp_path / "store"), False,
                              0)["site-1"]
    run_dir = tmp_path / "rogue-run"
    run_dir.mkdir()
    env = dict(os.environ, PATH=local_federation.VENV_BIN + os.pathsep + os.environ["PATH"], NVFL_WORKSPACE=str(run_dir))
    server_log = os.path.join(federation.workspace("localhost"), "log.txt")
    server_before = len(read(server_log))
    proc = subprocess.Popen(["bash", os.path.join(kit, "startup", "sub_start.sh"), "--once"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "certificate" not in read(run_dir / "log.txt").lower():
            time.sleep(1)
        rogue_log = read(run_dir / "log.txt")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    assert "Successfully registered" not in rogue_log
    assert "CERTIFICATE_VERIFY_FAILED" in rogue_log, rogue_log[-3000:]
    # The rogue aborts the handshake on the server's certificate, so no connection is ever created on the server
    # (NVFlare 2.9 logs nothing for a handshake that never completes: the server-side record is the absence).
    server_new = read(server_log)[server_before:]
    assert "is created" not in server_new.replace("SSL admin@test.org] is created", ""), server_new[-3000:]
    status = federation.nvflare("system", "status")
    assert sorted(c["client_name"] for c in status["data"]["clients"]) == SITES


def test_member_cannot_submit_custom_code(federation, tiny_assets, tmp_path):
    from fl_deploy import make_job

    job = str(tmp_path / "job")
    assert make_job.main(["--out", job, "--sites", ",".join(SITES), "--rounds", "1",
                          "--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"]]) == 0
    refused = federation.nvflare("job", "submit", "-j", job, admin=MEMBER)
    assert refused["status"] != "ok"
    assert "not authorized" in refused["message"].lower() or "authoriz" in str(refused).lower(), refused
    jobs = federation.nvflare("job", "list")
    assert not jobs["data"] or all(j.get("submitter") != MEMBER for j in jobs["data"]), jobs
