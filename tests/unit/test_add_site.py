"""Adding a site: one command, same root CA, the running participants are not restarted, and it trains."""

import json
import os
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
