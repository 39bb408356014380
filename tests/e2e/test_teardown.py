"""Nothing left behind, and Docker's own record of an out-of-memory kill, on a real engine (seconds, no project
image: the base image only).

  * a test run stopped by SIGTERM still runs its fixtures' finalisers: its stack is gone (stack_teardown.py);
  * scripts/test.sh's clean-up removes the stacks and images of runs whose process is gone, never a running one's;
  * the kernel's OOM kill of a child process in a container shows in `docker events`, as fl_deploy/diagnose.py
    reads it to say why a job ended.
"""

import os
import subprocess
import sys
import time

import pytest

import docker_env
from fl_deploy import diagnose
from fl_deploy.harness.compose_stack import find_test_stacks, remove_test_stacks

docker_env.require_docker()
IMAGE = os.environ.get("FL_TEST_BASE_IMAGE", "python:3.11-slim-bookworm")
E2E = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def base_image():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        docker_env.skip_unless_required(f"base image {IMAGE} not present (FL_TEST_BASE_IMAGE)")
    return IMAGE


def sleeper(project: str, image: str, folder):
    """A one-service compose stack, as the tests' stacks are made (docker compose up)."""
    (folder / "compose.yaml").write_text(f"services:\n  sleeper:\n    image: {image}\n    command: sleep 600\n")
    subprocess.run(["docker", "compose", "-p", project, "up", "-d"], cwd=folder, check=True, capture_output=True)


def containers(project: str) -> list:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                          capture_output=True, text=True).stdout.split()


def test_sigterm_runs_the_finalisers(base_image, tmp_path):
    marker = tmp_path / "events"
    (tmp_path / "test_holds_a_stack.py").write_text(f'''
import os, subprocess, time, pytest

@pytest.fixture
def stack():
    project = f"gpt2fl-e2e-{{os.getpid()}}"
    open("compose.yaml", "w").write("services:\\n  s:\\n    image: {base_image}\\n    command: sleep 600\\n")
    subprocess.run(["docker", "compose", "-p", project, "up", "-d"], check=True, capture_output=True)
    try:
        yield project
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "-t", "1"], capture_output=True)
        open({str(marker)!r}, "a").write("finaliser\\n")

def test_runs_long(stack):
    open({str(marker)!r}, "a").write(stack + "\\n")
    time.sleep(600)
''')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([E2E, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "stack_teardown",
                             str(tmp_path / "test_holds_a_stack.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-2000:]
        time.sleep(0.5)
    project = marker.read_text().split()[0]
    assert containers(project)
    proc.terminate()
    out, _ = proc.communicate(timeout=120)
    assert "finaliser" in marker.read_text(), out[-2000:]
    assert containers(project) == [], out[-2000:]


def test_stale_stacks_are_removed_running_ones_kept(base_image, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid whose process is gone
    stale, live = f"gpt2fl-e2e-{dead.pid}", f"mh-{os.getpid()}-site-1"
    sleeper(stale, base_image, tmp_path)
    sleeper(live, base_image, tmp_path)
    try:
        assert {stale: dead.pid, live: os.getpid()}.items() <= find_test_stacks().items()
        run = subprocess.run([sys.executable, "-m", "fl_deploy.harness.compose_stack", "--remove-stale-test-stacks"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert f"removed stale test stack {stale}" in run.stdout
        assert containers(stale) == [] and containers(live)
    finally:
        remove_test_stacks(pid=os.getpid())
        subprocess.run(["docker", "compose", "-p", stale, "down", "-t", "1"], capture_output=True)
    assert containers(live) == []


def test_docker_records_the_oom_kill_of_a_child_process(base_image):
    """A child process killed for lack of memory while the container's main process lives on: what happens to a
    server's job process. Docker's events say "oom" for that container; diagnose turns it into the cause."""
    project = f"gpt2fl-e2e-{os.getpid()}"
    since = time.time()
    run = subprocess.run(["docker", "run", "--rm", "--memory", "64m", "--memory-swap", "64m", "--label",
                          f"com.docker.compose.project={project}", "--label", "com.docker.compose.service=server",
                          base_image, "python3", "-c",
                          "import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
                          "'b = bytearray(300 * 2**20)']).returncode)"], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "-9", run.stdout + run.stderr  # SIGKILL from the kernel; the container went on
    events = diagnose.docker_events(project, since - 1, time.time() + 1)
    assert [(e["service"], e["action"]) for e in events if e["action"] == "oom"] == [("server", "oom")], events
    facts = diagnose.describe(-9, events)
    assert any(f.startswith("Docker recorded an out-of-memory kill in the server container") for f in facts), facts
