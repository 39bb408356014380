"""Site bundles (scripts/export_bundles.py) and what their compose file makes of them (issue 15, case 10): an
address no site could reach the server at is refused at export, an empty FL_SERVER_ADDRESS is refused by compose
with the variable's name, and the site's container carries the site's name."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from fl_deploy import ROOT, provision
from fl_deploy.project import load_project

EXPORT = os.path.join(ROOT, "scripts", "export_bundles.py")


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    shutil.copy(os.path.join(ROOT, "project.yml"), root / "project.yml")
    provision.provision(load_project(str(root / "project.yml")), str(root / "ws"), storage_root="/workspace",
                        force=False, service_uid=0)
    return root


def export(root, *args):
    return subprocess.run([sys.executable, EXPORT, "--project", str(root / "project.yml"), "--workspace",
                           str(root / "ws"), "--force", *args], capture_output=True, text=True)


@pytest.mark.parametrize("address, words", [
    ("127.0.0.1", ["is a loopback address", "inside a site's container it never reaches the server"]),
    ("::1", ["is a loopback address"]),
    ("0.0.0.0", ["is the unspecified address"]),
    ("<fill in>", ["is not an IP address", "placeholders"]),
    ("fl.example.org", ["is not an IP address", "getent ahostsv4"]),
])
def test_export_refuses_an_address_no_site_reaches_the_server_at(kits, tmp_path, address, words):
    run = export(kits, "--server-address", address, "--out", str(tmp_path / "out"))
    err = run.stderr.strip()
    assert run.returncode == 2 and err.startswith("error: --server-address") and len(err.splitlines()) == 1, err
    for w in words + ["host-gateway"]:
        assert w in err, err
    assert not (tmp_path / "out").exists()


def compose_config(bundle, env_overrides: dict = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_"))}
    env.update(env_overrides or {})
    return subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=bundle, env=env,
                          capture_output=True, text=True)


@pytest.fixture
def docker_cli():
    if not shutil.which("docker") or subprocess.run(["docker", "compose", "version"],
                                                    capture_output=True).returncode != 0:
        pytest.skip("needs the docker CLI with Compose v2 (no engine: compose config only)")


def test_an_unfilled_bundle_is_refused_by_compose_with_the_variable(kits, tmp_path, docker_cli):
    assert export(kits, "--out", str(tmp_path / "out")).returncode == 0
    bundle = tmp_path / "out" / "site-2"
    assert "\nFL_SERVER_ADDRESS=\n" in (bundle / ".env").read_text()
    run = compose_config(bundle)
    assert run.returncode != 0 and "required variable FL_SERVER_ADDRESS is missing a value: set FL_SERVER_ADDRESS " \
        "in .env (server IP or host-gateway)" in run.stderr, run.stderr


def test_the_sites_container_is_named_after_the_site(kits, tmp_path, docker_cli):
    """The bundle of site-2 used to run as `<project>-site-1` with log lines `site-1 |` (service `site`, replica 1)."""
    assert export(kits, "--out", str(tmp_path / "out"), "--server-address", "10.1.2.3").returncode == 0
    run = compose_config(tmp_path / "out" / "site-2")
    assert run.returncode == 0, run.stderr
    site = json.loads(run.stdout)["services"]["site"]
    assert site["container_name"] == "gpt2-fl-site-2" and site["hostname"] == "site-2"
    assert site["extra_hosts"] in (["fl-server=10.1.2.3"], ["fl-server:10.1.2.3"], {"fl-server": ["10.1.2.3"]})
    assert site["environment"]["FL_SERVER_ADDRESS"] == "10.1.2.3"  # named by the site's reach check
