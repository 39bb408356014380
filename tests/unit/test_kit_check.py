"""docker/kit_check.py, the containers' start check and healthcheck, against a kit and workspace made here."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fl_deploy.harness import local_federation

SCRIPT = os.path.join(local_federation.ROOT, "docker", "kit_check.py")


def kit(tmp_path, target: str):
    startup = tmp_path / "kit" / "startup"
    startup.mkdir(parents=True)
    for name in ("fed_client.json", "fed_server.json"):
        (startup / name).write_text(json.dumps({"servers": [{"service": {"target": target, "scheme": "http"}}]}))
    (tmp_path / "ws" / "tmp").mkdir(parents=True)
    return dict(os.environ, FL_KIT=str(tmp_path / "kit"), FL_WORKSPACE=str(tmp_path / "ws"))


def check(env, *args):
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_unresolvable_server_name_is_named_with_the_fix(tmp_path):
    run = check(kit(tmp_path, "fl-server.invalid:8002"), "resolves")
    assert run.returncode == 2
    assert "server name 'fl-server.invalid' from this site's kit does not resolve" in run.stderr
    assert "FL_SERVER_ADDRESS" in run.stderr and "Do not edit the kit" in run.stderr


def test_resolvable_server_name_passes(tmp_path):
    assert check(kit(tmp_path, "localhost:8002"), "resolves").returncode == 0


@pytest.fixture
def listening():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server
    server.close()


def test_site_healthy_only_when_connected_and_registered_since_start(tmp_path, listening):
    port = listening.getsockname()[1]
    env = kit(tmp_path, f"localhost:{port}")
    log = tmp_path / "ws" / "log.txt"
    log.write_text("... Successfully registered client:site-1 ...\n")  # from before a restart
    (tmp_path / "ws" / "tmp" / "log_start").write_text(str(log.stat().st_size))
    with socket.create_connection(("127.0.0.1", port)):
        assert check(env, "healthy", "site").returncode == 1  # connected, but no registration since the start
        with open(log, "a") as f:
            f.write("... Successfully registered client:site-1 ...\n")
        assert check(env, "healthy", "site").returncode == 0
    listening.accept()[0].close()
    # Registered but no longer connected (server gone): unhealthy.
    assert check(env, "healthy", "site").returncode == 1


def test_site_healthy_after_log_rotation(tmp_path, listening):
    port = listening.getsockname()[1]
    env = kit(tmp_path, f"localhost:{port}")
    (tmp_path / "ws" / "tmp" / "log_start").write_text("999999")  # log.txt was big, then rotated
    (tmp_path / "ws" / "log.txt").write_text("... Successfully registered client:site-1 ...\n")
    with socket.create_connection(("127.0.0.1", port)):
        assert check(env, "healthy", "site").returncode == 0


def test_server_healthy_when_its_port_accepts(tmp_path, listening):
    assert check(kit(tmp_path, f"fl-server:{listening.getsockname()[1]}"), "healthy", "server").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert check(kit(tmp_path / "x", f"fl-server:{closed}"), "healthy", "server").returncode != 0


# --- issue 15 case 9: ownership changes stop the container at start with the path, owner, mode, uid and fix ------

def load_kit_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kit_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_kit_unpacked_by_another_user_is_named_with_the_fix(tmp_path):
    """A bundle unpacked by a normal user (uid 1000): client.key stays 0600 to that user, the container runs as
    10001 and could not read it (NVFlare would fail with 'Permission denied' at every restart)."""
    kc = load_kit_check()
    kit_dir = tmp_path / "kit" / "startup"
    kit_dir.mkdir(parents=True)
    (kit_dir / "fed_client.json").write_text("{}")
    key = kit_dir / "client.key"
    key.write_text("secret")
    (tmp_path / "ws").mkdir()
    for path in (tmp_path / "kit", kit_dir, kit_dir / "fed_client.json", key, tmp_path / "ws"):
        if os.getuid() == 0:
            os.chown(path, 1000, 1000)
    owner = os.stat(key).st_uid
    key.chmod(0o600)
    problem = kc.access_problem("site", uid=owner + 9001, gids={owner + 9001}, kit=str(tmp_path / "kit"),
                                workspace=str(tmp_path / "ws"), hf_cache=str(tmp_path / "none"))
    assert problem.startswith(f"error: {key} belongs to uid {owner} (mode 0600) and this container runs as uid "
                              f"{owner + 9001}, so it cannot read it"), problem
    assert f"sudo chown -R {owner + 9001}:{owner + 9001}" in problem and f"FL_UID={owner} in .env" in problem
    assert len(problem.splitlines()) == 1
    assert kc.access_problem("site", uid=owner, gids={owner}, kit=str(tmp_path / "kit"),
                             workspace=str(tmp_path / "ws"), hf_cache=str(tmp_path / "none")) == ""


def test_a_volume_written_with_another_fl_uid_is_named_with_the_fix(tmp_path):
    kc = load_kit_check()
    (tmp_path / "kit" / "startup").mkdir(parents=True)
    ws = tmp_path / "ws"
    (ws / "tmp").mkdir(parents=True)
    (ws / "log.txt").write_text("from the earlier run\n")
    ws.chmod(0o755)
    owner = os.stat(ws).st_uid
    problem = kc.access_problem("server", uid=owner + 1, gids={owner + 1}, kit=str(tmp_path / "kit"),
                                workspace=str(ws), hf_cache=str(tmp_path / "none"))
    assert problem.startswith(f"error: {ws} belongs to uid {owner} (mode 0755) and this container runs as uid "
                              f"{owner + 1}, so it cannot write it"), problem
    for words in (f"FL_UID={owner} in .env", "docker compose down -v", f"chown -R {owner + 1}:{owner + 1}"):
        assert words in problem, problem
    # The same check through the command, as the entrypoint runs it: this user owns everything here.
    env = dict(os.environ, FL_KIT=str(tmp_path / "kit"), FL_WORKSPACE=str(ws), HF_HOME=str(tmp_path / "none"))
    assert check(env, "access", "server").returncode == 0


# --- issue 15 case 10: a site that cannot reach the server says where it dials and why ---------------------------

def test_site_health_names_the_address_and_the_reason(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = kit(tmp_path, f"localhost:{closed}")
    env["FL_SERVER_ADDRESS"] = "127.0.0.1"  # what the site host's .env says
    run = check(env, "healthy", "site")
    assert run.returncode == 1
    assert run.stdout.startswith(f"cannot reach localhost:{closed} at 127.0.0.1: Connection refused; "
                                 "FL_SERVER_ADDRESS must be the server host's IP address"), run.stdout
    assert "it is '127.0.0.1' in .env; a loopback address is this container itself" in run.stdout
    env.pop("FL_SERVER_ADDRESS")  # the server's own compose project: no address to blame
    assert "the server container of this compose project must be running" in check(env, "healthy", "site").stdout


@pytest.fixture(scope="module")
def two_provisionings(tmp_path_factory):
    """A site kit, and a server kit from another provisioning (another root CA)."""
    from fl_deploy import provision
    from fl_deploy.project import load_project

    kits = {}
    for name in ("ours", "theirs"):
        root = tmp_path_factory.mktemp(name)
        local_federation.write_project(str(root / "project.yml"), 18002, ["site-1"], name=name)
        kits[name] = provision.provision(load_project(str(root / "project.yml")), str(root / "ws"),
                                         storage_root=str(root / "store"), force=False, service_uid=0)
    return kits


@pytest.mark.parametrize("answer", ["plain", "other-ca"])
def test_site_health_when_something_else_answers(tmp_path, two_provisionings, answer):
    """The address answers, but it is not this federation's server: a plain TCP service, or a TLS server whose
    certificate another root CA signed."""
    import ssl
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    theirs = os.path.join(two_provisionings["theirs"]["localhost"], "startup")

    def serve():
        conn, _ = server.accept()
        if answer == "plain":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(theirs, "server.crt"), os.path.join(theirs, "server.key"))
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ours = two_provisionings["ours"]["site-1"]
    env = dict(os.environ, FL_KIT=ours, FL_WORKSPACE=str(tmp_path), FL_SERVER_ADDRESS="10.9.8.7")
    client_json = os.path.join(ours, "startup", "fed_client.json")
    original = open(client_json).read()
    try:
        with open(client_json, "w") as f:
            f.write(original.replace("localhost:18002", f"localhost:{port}"))
        run = check(env, "healthy", "site")
    finally:
        with open(client_json, "w") as f:
            f.write(original)
        server.close()
        t.join(5)
    assert run.returncode == 1
    assert run.stdout.startswith(f"cannot reach localhost:{port} at 127.0.0.1: something answers there but "), run.stdout
    assert ("not this federation's server" if answer == "other-ca" else "the TLS handshake with it failed") \
        in run.stdout
    assert "FL_SERVER_ADDRESS must be the server host's IP address" in run.stdout


def test_what_the_containers_user_owns_in_a_volume_never_stops_it(tmp_path):
    """A read-only file or folder the user owns in its workspace (NVFlare or a job may write 0444 / 0500) is not an
    ownership problem: the owner may chmod it. Only another uid's entries it cannot write are."""
    kc = load_kit_check()
    (tmp_path / "kit" / "startup").mkdir(parents=True)
    ws = tmp_path / "ws"
    (ws / "job" / "ro").mkdir(parents=True)
    (ws / "job" / "result.zip").write_text("x")
    (ws / "job" / "result.zip").chmod(0o444)
    (ws / "job" / "ro").chmod(0o500)
    owner = os.stat(ws).st_uid
    assert kc.access_problem("site", uid=owner, gids={owner}, kit=str(tmp_path / "kit"), workspace=str(ws),
                             hf_cache=str(tmp_path / "none")) == ""
    (ws / "job" / "ro").chmod(0o755)
