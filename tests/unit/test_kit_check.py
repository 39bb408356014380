"""docker/kit_check.py, the containers' start check and healthcheck, against a kit and workspace made here."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fl_deploy import local_federation as fl_system

SCRIPT = os.path.join(fl_system.ROOT, "docker", "kit_check.py")


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
