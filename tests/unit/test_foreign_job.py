"""A job folder that this project did not generate (issue 15, case 1): NVFlare's stock recipe API exports
`deploy_map: {"app": ["@ALL"]}` (every connected site) and writes its job folder 0700. check_job reads @ALL as what
it is, submit_job.py checks such a job against the connected sites, and a job whose client needs a named site list
(ours shards the data by a site's position in --sites) is checked against that list."""

import json
import os
import shutil
import time

import pytest

from fl_deploy import ROOT, host
from fl_deploy.host import AdminConsole, HostError
from fl_deploy.submit_job import preflight, staging
from fl_deploy.check_job import check_job
from support import stock_recipe_job

def status(clients: list) -> dict:
    now = time.time()
    return {"status": "ok", "data": {"jobs": [], "clients": [{"client_name": c, "client_last_conn_time": now - 3}
                                                           for c in clients]}}


def test_check_job_reads_all_as_every_connected_site(tmp_path):
    job = stock_recipe_job(str(tmp_path))
    with open(os.path.join(job, "meta.json")) as f:
        assert json.load(f)["deploy_map"] == {"app": ["@ALL"]}  # what NVFlare's exporter writes
    needs, problems = check_job(job, imports=True)
    assert problems == []
    # "@ALL" is not a site; it deploys to the server too, whose config runs the recipe's one round
    assert needs == {"sites": [], "all_sites": True, "min_sites": 2, "rounds": 1}


def test_submit_checks_an_all_sites_job_against_the_connected_sites(tmp_path, monkeypatch, capsys):
    needs, _ = check_job(stock_recipe_job(str(tmp_path)))
    args = AdminConsole(env_file=str(tmp_path / "none.env"))
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: status(["site-1", "site-2", "site-3"]))
    preflight.require_sites(needs, args)  # accepted: it runs on the three connected sites
    assert "deploys to every connected site (@ALL): site-1, site-2, site-3" in capsys.readouterr().out
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: status(["site-1"]))
    with pytest.raises(HostError) as e:
        preflight.require_sites(needs, args)
    assert "needs at least 2 (min_clients in its meta.json) but 1 is connected (site-1); nothing was submitted" \
        in str(e.value)


def test_a_client_that_needs_a_named_site_list_is_checked_against_it(tmp_path, monkeypatch):
    """Our job deployed with @ALL: its client still shards by --sites, so a connected site outside the list would
    get no shard, and a listed site that is not connected would never answer."""
    job = tmp_path / "job"
    shutil.copytree(os.path.join(ROOT, "jobs", "gpt2-fedavg-stream"), job)
    meta = json.loads((job / "meta.json").read_text())
    meta["deploy_map"]["app_site"] = ["@ALL"]
    (job / "meta.json").write_text(json.dumps(meta))
    needs, problems = check_job(str(job))
    assert problems == [] and needs["sites"] == ["site-1", "site-2"] and needs["all_sites"] is True
    args = AdminConsole(env_file=str(tmp_path / "none.env"))
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: status(["site-1", "site-2", "site-3"]))
    with pytest.raises(HostError) as e:
        preflight.require_sites(needs, args)
    assert "its client takes the site list site-1,site-2" in str(e.value)
    assert "site-3 would get no data shard; nothing was submitted" in str(e.value)
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: status(["site-1"]))
    with pytest.raises(HostError, match="site-2 is not connected"):
        preflight.require_sites(needs, args)
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: status(["site-1", "site-2"]))
    preflight.require_sites(needs, args)


def test_a_deploy_map_that_disagrees_with_the_clients_site_list_is_a_problem(tmp_path):
    job = tmp_path / "job"
    shutil.copytree(os.path.join(ROOT, "jobs", "gpt2-fedavg-stream"), job)
    meta = json.loads((job / "meta.json").read_text())
    meta["deploy_map"]["app_site"] = ["site-1", "site-3"]
    (job / "meta.json").write_text(json.dumps(meta))
    _, problems = check_job(str(job))
    assert problems == ["app_site: deploy_map sends the app to site-1, site-3 but its client is started with "
                        "--sites site-1,site-2: both must name the same sites"]


def test_a_folder_this_user_cannot_read_is_recognised(tmp_path):
    """A 0700 job folder owned by someone else (NVFlare's exporter run by another user or in a container): the
    host cannot read it, so submit_job.py reads it through the admin service's image instead (tested on
    containers in tests/e2e/test_faults_compose.py). Checked as an unprivileged uid, since root reads anything."""
    job = stock_recipe_job(str(tmp_path / "x"))
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        os.chmod(dirpath, 0o755)
    os.chmod(job, 0o700)  # as NVFlare's exporter leaves it; owned by this test's uid, read below as another
    if os.getuid() != 0:
        pytest.skip("needs root to run the check as another uid")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes another user and answers through the pipe
        try:
            os.setgid(54321)
            os.setuid(54321)
            os.write(write, f"{staging.host_can_read(job)} {staging.host_can_read(os.path.join(ROOT, 'jobs'))}"
                     .encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert answer.split() == ["False", "True"]
