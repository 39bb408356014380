"""An IPv6-only server (issue 24, case 7): what the deployment does with an IPv6 address at each place one can be
given. The kits dial a DNS name (project.yml refuses an address there, IPv6 too); the address lives in the site's
FL_SERVER_ADDRESS (extra_hosts), the site's network needs IPv6 for it (FL_IPV6), the server publishes on :: and the
checks resolve and connect over AF_INET6. No IPv6 route leaves this machine: what needs one is in the reliability
record as not run."""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading

import pytest
import yaml

from fl_deploy import ROOT, check_host, provision
from fl_deploy.host import HostError
from fl_deploy.project import ProjectError, check_deployable, load_project
from test_kit_check import load_kit_check

def test_an_ipv6_address_as_the_servers_name_is_refused_naming_the_fix(tmp_path):
    raw = yaml.safe_load(open(os.path.join(ROOT, "project.yml")))
    next(p for p in raw["participants"] if p["type"] == "server")["default_host"] = "2001:db8::5"
    (tmp_path / "project.yml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ProjectError) as e:
        check_deployable(load_project(str(tmp_path / "project.yml")))
    assert "'2001:db8::5'" in str(e.value) and "an IP address" in str(e.value) and "default_host" in str(e.value)


def test_the_port_check_binds_ipv6_addresses(monkeypatch):
    """FL_SERVER_BIND=:: (an IPv6-only host): the free-port check used an IPv4 socket and called every IPv6 port
    'already in use'."""
    monkeypatch.setattr(check_host, "running_services", lambda: set())
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(HostError, match=f"port {port} on ::1 is already in use"):
            check_host.check_port("::1", port)
    check_host.check_port("::1", port)  # free again: passes
    check_host.check_port("::", port)


def test_a_site_reaches_and_names_an_ipv6_server_address():
    """The site's reach check resolves and connects over AF_INET6: something that answers on [::1] but is not the
    server is named with the IPv6 address; an unreachable IPv6 address names FL_IPV6."""
    kc = load_kit_check()
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    answer = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
    answer.start()
    try:
        address, reason = kc.reach_problem("::1", port, context=ssl.create_default_context())
    finally:
        answer.join(5)
        listener.close()
    assert address == "::1" and reason.startswith("something answers there but the TLS handshake"), reason
    os.environ["FL_SERVER_ADDRESS"] = "2001:db8::1"
    try:
        line = kc.reach_message("fl-server", 8002, "2001:db8::1", "Network is unreachable")
    finally:
        del os.environ["FL_SERVER_ADDRESS"]
    assert line.startswith("cannot reach fl-server:8002 at 2001:db8::1: Network is unreachable; the server's "
                           "address is IPv6 and this container's network has no IPv6 route: set FL_IPV6=true"), line
    assert kc.ipv6_hint("10.0.0.5", "Network is unreachable") == "" and kc.ipv6_hint("2001:db8::1", "timed out") == ""


@pytest.mark.skipif(not shutil.which("docker") or subprocess.run(["docker", "compose", "version"],
                    capture_output=True).returncode != 0, reason="needs the docker CLI with Compose v2 (config only)")
def test_a_site_bundle_for_an_ipv6_server_maps_the_name_and_gets_ipv6(tmp_path):
    shutil.copy(os.path.join(ROOT, "project.yml"), tmp_path / "project.yml")
    provision.provision(load_project(str(tmp_path / "project.yml")), str(tmp_path / "ws"),
                        storage_root="/workspace", force=False, service_uid=0)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export_bundles.py"), "--project",
                          str(tmp_path / "project.yml"), "--workspace", str(tmp_path / "ws"), "--out",
                          str(tmp_path / "out"), "--server-address", "[2001:db8::1]"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    bundle = tmp_path / "out" / "site-1"
    env_text = (bundle / ".env").read_text()
    assert "\nFL_SERVER_ADDRESS=2001:db8::1\n" in env_text and "\nFL_IPV6=true\n" in env_text  # brackets dropped
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_"))}
    run = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=bundle, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    model = json.loads(run.stdout)
    assert model["services"]["site"]["extra_hosts"] in (["fl-server=2001:db8::1"], ["fl-server:2001:db8::1"])
    assert model["networks"]["default"]["enable_ipv6"] is True
