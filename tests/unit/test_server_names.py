"""The server's names (issue 15, cases 3 and 4): whatever project.yml says about how the kits reach the server
(`default_host`, a site's `connect_to`, a server name longer than a certificate subject), the compose aliases, the
kit mounts and the site bundles follow what NVFlare really wrote into the kits, and the server's certificate answers
to every name a kit dials (checked with a real TLS handshake between the kits). What the containers cannot honour is
refused by provision.py in one sentence, before anything is written."""

import json
import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest
import yaml

from fl_deploy import ROOT, compose_files, export_bundles, provision
from fl_deploy.project import load_project

LONG_NAME = "fl-server.federated-learning.radiology.university-hospital-example.org"  # 70 characters


def write_project(tmp_path, server: dict, site_2: dict = None) -> str:
    with open(os.path.join(ROOT, "project.yml")) as f:
        raw = yaml.safe_load(f)
    for p in raw["participants"]:
        if p["type"] == "server":
            p.update(server)
        if p["name"] == "site-2" and site_2:
            p.update(site_2)
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def kit_dials(kit: str) -> str:
    """host:port the kit connects to, as NVFlare wrote it."""
    startup = os.path.join(kit, "startup")
    if os.path.isfile(os.path.join(startup, "fed_client.json")):
        with open(os.path.join(startup, "fed_client.json")) as f:
            return json.load(f)["servers"][0]["service"]["target"]
    with open(os.path.join(startup, "fed_admin.json")) as f:
        admin = json.load(f)["admin"]
    return f"{admin['host']}:{admin['port']}"


def tls_handshake(server_kit: str, client_kit: str, host: str, client_trusts: str = None):
    """Mutual TLS as NVFlare does it: the server's certificate checked against ``host`` with the client's root CA
    (or ``client_trusts``, a rootCA.pem), the client's certificate against the server's root CA. Raises ssl.SSLError
    when either side refuses: under TLS 1.3 the client's handshake completes before the server checks the client's
    certificate, so the server side's error is raised too."""
    s_start, c_start = os.path.join(server_kit, "startup"), os.path.join(client_kit, "startup")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(os.path.join(s_start, "server.crt"), os.path.join(s_start, "server.key"))
    server_ctx.load_verify_locations(os.path.join(s_start, "rootCA.pem"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=client_trusts or os.path.join(c_start, "rootCA.pem"))
    client_ctx.load_cert_chain(os.path.join(c_start, "client.crt"), os.path.join(c_start, "client.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    errors = []

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname()) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.do_handshake()
    finally:
        t.join(10)
        listener.close()
    if errors:
        raise errors[0]


def provisioned(tmp_path, project_path: str) -> tuple:
    project = load_project(project_path)
    ws = str(tmp_path / "ws")
    kits = provision.provision(project, ws, storage_root="/workspace", force=False, service_uid=0)
    return project, ws, kits


def check_everything_agrees(tmp_path, project, ws, kits):
    """Kits, compose model and bundles agree with what NVFlare wrote; TLS accepts every dialled name."""
    model = compose_files.participants_model(project)
    # Every kit the compose services mount is a kit NVFlare wrote.
    mounted = {v.split(":")[0] for svc in model["services"].values() for v in svc["volumes"] if v.endswith(":/kit:ro")}
    for source in mounted:
        assert os.path.isdir(os.path.join(ws, os.path.relpath(source, "./workspace"), "startup")), source
    assert len(mounted) == len(project.participants)
    # The server answers on the compose network to exactly the names the kits dial.
    dialled = {kit_dials(kits[n]).rsplit(":", 1)[0] for n in [*project.sites, *(a.name for a in project.admins)]}
    aliases = model["services"]["server"]["networks"]["default"]["aliases"]
    assert dialled <= set(aliases) and set(aliases) <= dialled | {project.server_host}, (aliases, dialled)
    # ... and its certificate to each of them (the site's kit checks the server's certificate against that name).
    for site in project.sites:
        tls_handshake(kits[project.server_kit], kits[site], kit_dials(kits[site]).rsplit(":", 1)[0])
    # Bundles: not called stale, and each site maps the very name its own kit dials.
    out = tmp_path / "bundles"
    export_bundles.export(project.path, ws, str(out), server_address="10.1.2.3")
    for site in project.sites:
        env = (out / site / ".env").read_text()
        assert f"FL_SERVER_NAME={kit_dials(kits[site]).rsplit(':', 1)[0]}\n" in env, env
    return dialled


def test_default_host_and_a_sites_connect_to_are_followed_everywhere(tmp_path):
    """Case 3: the kits dial fl.hospital.example (default_host) and site-2 fl-alt.example (its connect_to, a name
    the server's certificate carries): compose aliases both, each bundle maps its kit's own name."""
    path = write_project(tmp_path, {"default_host": "fl.hospital.example",
                                    "host_names": ["localhost", "fl-alt.example"]},
                         {"connect_to": {"host": "fl-alt.example"}})
    project, ws, kits = provisioned(tmp_path, path)
    assert kit_dials(kits["site-1"]) == "fl.hospital.example:8002"
    assert kit_dials(kits["site-2"]) == "fl-alt.example:8002"
    assert check_everything_agrees(tmp_path, project, ws, kits) == {"fl.hospital.example", "fl-alt.example"}
    # The name a kit does not dial is refused by the server's certificate: the handshake test is not vacuous.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(kits[project.server_kit], kits["site-1"], "fl-server.example")


def test_a_client_kit_from_another_provisioning_is_refused_by_the_server(tmp_path):
    """The server's side of mutual TLS is checked, not only the client's: a site kit from another provisioning of the
    same project (its own root CA), even trusting this server, is refused by the server."""
    path = write_project(tmp_path, {})
    project, ws, kits = provisioned(tmp_path, path)
    other = tmp_path / "other"
    other.mkdir()
    _, _, foreign = provisioned(other, write_project(other, {}))
    server_ca = os.path.join(kits[project.server_kit], "startup", "rootCA.pem")
    host = kit_dials(kits["site-1"]).rsplit(":", 1)[0]
    tls_handshake(kits[project.server_kit], kits["site-1"], host)  # this federation's kit: accepted
    with pytest.raises(ssl.SSLError):
        tls_handshake(kits[project.server_kit], foreign["site-1"], host, client_trusts=server_ca)


def test_a_server_name_longer_than_a_certificate_subject(tmp_path):
    """Case 4: NVFlare cuts the server's certificate subject and kit folder to 64 characters and makes the full
    name its default host; provision.py (the command) writes kits, mounts, aliases and bundles that agree."""
    path = write_project(tmp_path, {"name": LONG_NAME})
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "provision.py"), "--project", path,
                          "--workspace", str(tmp_path / "ws"), "--compose-dir", str(tmp_path), "--service-uid", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    project = load_project(path)
    ws = str(tmp_path / "ws")
    kits = {n: os.path.join(ws, "kits", n) for n in project.participants}
    assert project.server_kit == LONG_NAME[:64] and os.path.isdir(kits[project.server_kit])
    assert kit_dials(kits["site-1"]) == f"{LONG_NAME}:8002"
    assert check_everything_agrees(tmp_path, project, ws, kits) == {LONG_NAME}
    generated = yaml.safe_load((tmp_path / "compose.participants.yaml").read_text())
    assert generated["services"]["server"]["networks"]["default"]["aliases"] == [LONG_NAME]
    # The job store points at the volume in the kit NVFlare wrote (the truncated folder).
    with open(os.path.join(kits[project.server_kit], "local", "resources.json")) as f:
        assert "/workspace/jobs-storage" in f.read()


@pytest.mark.parametrize("server, site_2, words", [
    ({"host_names": ["localhost"]}, {"connect_to": {"host": "fl-other.example"}},
     ["'fl-other.example'", "certificate answers only to fl-server, localhost", "add 'fl-other.example' to the "
      "server's host_names"]),
    ({}, {"connect_to": {"name": "relay-1"}}, ["names relay relay-1", "runs no NVFlare relays"]),
    ({}, {"connect_to": {"host": "fl-server", "port": 9000}}, ["port 9000", "fed_learn_port 8002", "remove "
                                                               "connect_to.port"]),
    ({}, {"connect_to": {"port": 8002}}, ["has no host", "'None:8002'"]),
    ({}, {"connect_to": "localhost"}, ["'localhost'", "loopback name", "remove site-2's connect_to"]),
    ({"default_host": "10.0.0.5"}, None, ["'10.0.0.5'", "an IP address", "set the server's default_host"]),
    ({"admin_port": 8003}, None, ["admin_port 8003", "one port"]),
])
def test_provision_refuses_what_the_containers_cannot_honour(tmp_path, server, site_2, words):
    path = write_project(tmp_path, server, site_2)
    before = open(path).read()
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "provision.py"), "--project", path,
                          "--workspace", str(tmp_path / "ws"), "--compose-dir", str(tmp_path)],
                         capture_output=True, text=True)
    err = run.stderr.strip()
    assert run.returncode == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "ws").exists() and not (tmp_path / "compose.participants.yaml").exists()
    assert open(path).read() == before
