"""Adding a site: one command, same root CA, the running participants are not restarted, and it trains."""

import json
import os
import sys
import shutil

import pytest

from fl_deploy import ROOT, add_site, provision
from fl_deploy.project import ProjectError, load_project


def test_with_site_keeps_comments_and_rejects_bad_names(tmp_path):
    project = tmp_path / "project.yml"
    shutil.copy(os.path.join(ROOT, "project.yml"), project)
    before = project.read_text()
    after, new = add_site.with_site(load_project(str(project)), before, "site-3", "hospital_c")
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == \
        [line for line in after.splitlines() if line.lstrip().startswith("#")]
    assert new.sites == ("site-1", "site-2", "site-3")
    project.write_text(after)
    assert load_project(str(project)).sites == ("site-1", "site-2", "site-3")
    with pytest.raises(ProjectError, match="already a participant"):
        add_site.with_site(new, after, "site-3", "x")
    with pytest.raises(ProjectError, match="DNS label"):
        add_site.with_site(new, after, "Site_4", "x")


def test_a_site_is_not_added_with_another_scheme_than_the_running_servers(tmp_path):
    project = tmp_path / "project.yml"
    shutil.copy(os.path.join(ROOT, "project.yml"), project)
    ws = str(tmp_path / "ws")
    provision.provision(load_project(str(project)), ws, storage_root=str(tmp_path / "store"), force=False,
                        service_uid=0)
    text = project.read_text()
    scheme = load_project(str(project)).scheme
    other = "http" if scheme != "http" else "tcp"
    project.write_text(text.replace(f"scheme: {scheme}", f"scheme: {other}"))
    with pytest.raises(ProjectError, match=f"provisioned with scheme '{scheme}' but project.yml now says"):
        add_site.add_site(str(project), ws, "site-3", "x", service_uid=0)
    assert "site-3" not in project.read_text() and not os.path.exists(os.path.join(ws, "kits", "site-3"))
    project.write_text(text)  # the same scheme: the site is added
    kit, new = add_site.add_site(str(project), ws, "site-3", "x", service_uid=0)
    assert new.sites[-1] == "site-3" and load_project(str(project)).sites == new.sites
    with open(os.path.join(kit, "startup", "fed_client.json")) as f:
        assert json.load(f)["servers"][0]["service"]["scheme"] == scheme


def provisioned_copy(tmp_path) -> tuple:
    tmp_path.mkdir(parents=True, exist_ok=True)
    project = tmp_path / "project.yml"
    shutil.copy(os.path.join(ROOT, "project.yml"), project)
    ws = tmp_path / "ws"
    provision.provision(load_project(str(project)), str(ws), storage_root=str(tmp_path / "store"), force=False,
                        service_uid=0)
    return project, ws


def add_site_cli(project, ws, *flags, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "add_site.py"), "site-3", "--org", "x",
                           "--project", str(project), "--workspace", str(ws), "--compose-dir", "", *flags],
                          capture_output=True, text=True, env=None if env is None else {**os.environ, **env})


def test_add_site_without_the_provisioning_state_is_refused_before_anything_changes(tmp_path):
    """Issue 15 case 5: kits copied to another machine, or a cleaned workspace: without state/ nvflare provision
    would mint a new root CA, and the site could never join. Refused, naming the missing state; nothing changed."""
    project, ws = provisioned_copy(tmp_path)
    shutil.rmtree(ws / "provision")
    before = project.read_text()
    run = add_site_cli(project, ws)
    err = run.stderr.strip()
    assert run.returncode == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, (run.stdout, err)
    assert f"{ws}/provision/gpt2-fl/state/cert.json (the root CA's private key) is missing" in err, err
    assert "kits/fl-server/startup/rootCA.pem" in err and "same root CA" not in run.stdout
    assert project.read_text() == before
    assert sorted(os.listdir(ws / "kits")) == ["admin@fl-demo.org", "fl-server", "site-1", "site-2"]
    assert not (ws / "provision").exists()  # nvflare provision never ran


def test_the_new_kits_root_ca_is_checked_not_assumed(tmp_path):
    """A state that is not this federation's (another provisioning's, copied over): the new kit's rootCA.pem is
    compared with the running server kit's, the site is refused and nothing is installed."""
    project, ws = provisioned_copy(tmp_path)
    other_project, other_ws = provisioned_copy(tmp_path / "other")
    state = ws / "provision" / "gpt2-fl" / "state"
    shutil.rmtree(state)
    shutil.copytree(other_ws / "provision" / "gpt2-fl" / "state", state)
    before = project.read_text()
    run = add_site_cli(project, ws)
    err = run.stderr.strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1, (run.stdout, err)
    assert "signed site-3's kit with another root CA than the running kits'" in err and "nothing was installed" in err
    assert project.read_text() == before and not (ws / "kits" / "site-3").exists()


def test_an_added_sites_root_ca_is_the_running_servers(tmp_path):
    project, ws = provisioned_copy(tmp_path)
    run = add_site_cli(project, ws)
    assert run.returncode == 0, run.stderr
    assert "rootCA.pem checked: the running kits' root CA" in run.stdout
    assert (ws / "kits" / "site-3" / "startup" / "rootCA.pem").read_bytes() == \
        (ws / "kits" / "fl-server" / "startup" / "rootCA.pem").read_bytes()


def test_start_without_a_docker_cli_is_refused_before_anything_changes(tmp_path):
    """`scripts/in_image.sh scripts/add_site.py ... --start`: the image has no docker CLI. Refused first, in one
    sentence with the host command; project.yml, the kits and the compose files stay as they were."""
    project, ws = provisioned_copy(tmp_path)
    before, kits = project.read_text(), sorted(os.listdir(ws / "kits"))
    run = add_site_cli(project, ws, "--start", env={"PATH": os.path.dirname(sys.executable)})  # no docker on PATH
    err = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and "--start needs the docker CLI" in err and "nothing was changed" in err, run.stderr
    assert "docker compose up -d site-3" in err
    assert project.read_text() == before and sorted(os.listdir(ws / "kits")) == kits
