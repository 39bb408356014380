"""Adding a site: one command, same root CA, the running participants are not restarted, and it trains."""

import json
import os
import shutil

import pytest

import fl_system

SITES = ["site-1", "site-2"]


def test_add_to_project_keeps_comments_and_rejects_bad_names(tmp_path):
    import add_site
    import provision

    project = tmp_path / "project.yml"
    shutil.copy(os.path.join(fl_system.ROOT, "project.yml"), project)
    before = project.read_text()
    add_site.add_to_project(str(project), "site-3", "hospital_c")
    after = project.read_text()
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == \
        [line for line in after.splitlines() if line.lstrip().startswith("#")]
    assert provision.participants(provision.load_project(str(project)))["sites"] == ["site-1", "site-2", "site-3"]
    with pytest.raises(provision.ProjectError, match="already a participant"):
        add_site.add_to_project(str(project), "site-3", "x")
    with pytest.raises(provision.ProjectError, match="DNS label"):
        add_site.add_to_project(str(project), "Site_4", "x")


def test_a_site_is_not_added_with_another_scheme_than_the_running_servers(tmp_path):
    import add_site
    import provision

    project = tmp_path / "project.yml"
    shutil.copy(os.path.join(fl_system.ROOT, "project.yml"), project)
    ws = str(tmp_path / "ws")
    provision.provision(str(project), ws, storage_root=str(tmp_path / "store"), force=False, service_uid=0)
    text = project.read_text()
    scheme = add_site.project_scheme(provision.load_project(str(project)))
    other = "http" if scheme != "http" else "tcp"
    project.write_text(text.replace(f"scheme: {scheme}", f"scheme: {other}"))
    with pytest.raises(provision.ProjectError, match=f"provisioned with scheme '{scheme}' but project.yml now says"):
        add_site.add_site(str(project), ws, "site-3", "x", service_uid=0)
    assert "site-3" not in project.read_text() and not os.path.exists(os.path.join(ws, "kits", "site-3"))
    project.write_text(text)  # the same scheme: the site is added
    add_site.add_site(str(project), ws, "site-3", "x", service_uid=0)
    with open(os.path.join(ws, "kits", "site-3", "startup", "fed_client.json")) as f:
        assert json.load(f)["servers"][0]["service"]["scheme"] == scheme


@pytest.mark.integration
def test_new_site_joins_running_federation(tmp_path, tiny_assets, capsys):
    import add_site
    import make_job

    fed = fl_system.ProcessFederation(str(tmp_path), SITES)
    fed.start()
    try:
        fed.wait_for_sites()
        pids = {name: proc.pid for name, proc in fed.procs.items()}
        project = os.path.join(str(tmp_path), "project.yml")
        kit = add_site.add_site(project, os.path.join(str(tmp_path), "ws"), "site-3", "test", service_uid=0)
        with open(os.path.join(kit, "startup", "rootCA.pem")) as new, \
                open(os.path.join(fed.kits["site-1"], "startup", "rootCA.pem")) as old:
            assert new.read() == old.read()
        fed.kits["site-3"] = kit
        fed.sites.append("site-3")
        fed.restart("site-3")
        joined_s = fed.wait_for_sites()
        for name, pid in pids.items():  # nobody else was restarted
            assert fed.procs[name].pid == pid and fed.procs[name].poll() is None, name

        job = os.path.join(str(tmp_path), "job")
        assert make_job.main(["--out", job, "--project", project, "--rounds", "1", "--model", tiny_assets["model"],
                              "--dataset", tiny_assets["dataset"], "--max_steps", "2", "--batch_size", "4",
                              "--eval_samples", "8"]) == 0
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.nvflare("job", "wait", job_id, "--timeout", "600", timeout=660)
        assert fed.nvflare("job", "meta", job_id)["data"]["status"] == "FINISHED:COMPLETED"
        result = fed.nvflare("job", "download", job_id, "-o", os.path.join(str(tmp_path), "dl"))["data"]
    finally:
        fed.stop()
    with open(os.path.join(result["download_path"], "workspace", "metrics", "round_metrics.jsonl")) as f:
        first = json.loads(f.readline())
    assert sorted(s["name"] for s in first["sites"]) == ["site-1", "site-2", "site-3"]
    with capsys.disabled():
        print(f"\n[figures] add site: site-3 registered {joined_s:.1f}s after its start")
