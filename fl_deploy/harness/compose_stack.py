"""A second compose stack next to the user's: an isolated copy of the project, and its containers' memory.

Used by benchmarks/exchange.py (--deployment compose) and the container tests: each runs the real
deployment (provision.py, compose.yaml, the image) in a copy, under its own compose project name, so the user's
kits, .env and volumes are never touched.
"""

import os
import re
import shutil
import subprocess
import sys

from fl_deploy import IMAGE_REPO, ROOT
from fl_deploy.host import read_env_file


TINY_JOB_ENV = os.path.join(ROOT, "docker", "tiny-job.env")


def tiny_job(rounds: int = None) -> dict:
    """The demo's --tiny job settings (docker/tiny-job.env: HF_HUB_OFFLINE, FL_MODEL, FL_DATASET, FL_ROUNDS, ...), as
    the environment of a stack's commands; rounds: FL_ROUNDS instead of the file's."""
    settings = read_env_file(TINY_JOB_ENV)
    if rounds is not None:
        settings["FL_ROUNDS"] = str(rounds)
    return settings


def project_files() -> list:
    """The project's files as git sees them (tracked and untracked, not ignored): what a clone would hold."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [f for f in out.splitlines() if os.path.isfile(os.path.join(ROOT, f))]


def ensure_wheelhouse() -> str:
    wheels = os.path.join(ROOT, "docker", "wheels")
    if not any(f.endswith(".whl") for f in os.listdir(wheels)):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build_wheelhouse.sh")], check=True,
                       env=dict(os.environ, PYTHON=os.environ.get("PYTHON", sys.executable)))
    return wheels


def copy_project(work: str, with_wheels: bool = True):
    """Copy the project into work; the wheelhouse (GBs) is hard-linked, built first if it is empty."""
    for rel in project_files():
        os.makedirs(os.path.dirname(os.path.join(work, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(work, rel))
    if with_wheels:
        wheels = ensure_wheelhouse()
        for name in os.listdir(wheels):
            dst = os.path.join(work, "docker", "wheels", name)
            if not os.path.exists(dst):
                os.link(os.path.join(wheels, name), dst)


def edit_project(work: str, port: int = None, sites: list = (), admins: dict = None, server_name: str = None) -> int:
    """Edit the copy's project.yml as a user would before provisioning: the server's port moved (to ``port``, else a
    free one), the client ``sites`` it does not list yet added, ``admins`` ({email: role}) added after its first
    admin, the server renamed to ``server_name``. Returns the port. Raises AssertionError when project.yml no longer
    has the lines these edits expect."""
    from fl_deploy.harness.local_federation import free_port

    port = port or free_port()
    path = os.path.join(work, "project.yml")
    with open(path) as f:
        text = f.read()
    assert "fed_learn_port: 8002" in text and "  - name: admin@" in text and "    role: project_admin\n" in text
    text = text.replace("fed_learn_port: 8002", f"fed_learn_port: {port}")
    extra = "".join(f"  - name: {s}\n    type: client\n    org: hospital_{s.rsplit('-', 1)[-1]}\n"
                    for s in sites if f"  - name: {s}\n" not in text)
    text = text.replace("  - name: admin@", extra + "  - name: admin@", 1)
    more = "".join(f"  - name: {email}\n    type: admin\n    org: fl_demo\n    role: {role}\n"
                   for email, role in (admins or {}).items())
    text = text.replace("    role: project_admin\n", "    role: project_admin\n" + more, 1)
    if server_name:
        assert "name: fl-server" in text
        text = text.replace("name: fl-server", f"name: {server_name}")
    with open(path, "w") as f:
        f.write(text)
    return port


def checkout_env(work: str, base: dict = None) -> dict:
    """An environment in which Python imports the copy's own packages (fl_deploy, app_code/) rather than this
    checkout's, which the venv's project.pth names: for running the copy's scripts with the venv's Python."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [work, os.path.join(work, "app_code"), env.get("PYTHONPATH")]))
    return env


def _cgroup_dir(cid: str) -> str:
    for path in (f"/sys/fs/cgroup/memory/docker/{cid}",                  # cgroup v1, cgroupfs driver
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope",       # cgroup v2, systemd driver
                 f"/sys/fs/cgroup/docker/{cid}"):                         # cgroup v2, cgroupfs driver
        if os.path.isfile(os.path.join(path, "memory.stat")):
            return path
    raise RuntimeError(f"no memory cgroup for container {cid[:12]} under /sys/fs/cgroup (run on the Docker host)")


def resident_bytes_reader(cid: str):
    """A function returning the container's resident memory now: anonymous + mapped file pages, i.e. the RSS
    of its processes together, without the page cache that a file-writing container also accrues."""
    path = os.path.join(_cgroup_dir(cid), "memory.stat")

    def read() -> int:
        with open(path) as f:
            stat = dict(line.split() for line in f)
        if "total_rss" in stat:  # v1
            return int(stat["total_rss"]) + int(stat.get("total_mapped_file", 0))
        return int(stat["anon"]) + int(stat.get("file_mapped", 0))

    return read


def cpu_seconds_reader(cid: str):
    """A function returning the CPU seconds the container's processes have used so far (cgroup v1 cpuacct or v2
    cpu.stat)."""
    v1 = f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage"
    if os.path.isfile(v1):
        def read_v1() -> float:
            with open(v1) as f:
                return int(f.read()) / 1e9
        return read_v1
    stat = os.path.join(_cgroup_dir(cid), "cpu.stat")

    def read_v2() -> float:
        with open(stat) as f:
            return int(dict(line.split() for line in f)["usage_usec"]) / 1e6
    return read_v2


def peak_memory_bytes(cid: str) -> int:
    """The container's peak memory as the kernel counted it (page cache included): v1 on the host, else from
    inside the container."""
    host = f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes"
    if os.path.isfile(host):
        with open(host) as f:
            return int(f.read())
    for path in ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak"):
        run = subprocess.run(["docker", "exec", cid, "cat", path], capture_output=True, text=True)
        if run.returncode == 0 and run.stdout.strip().isdigit():
            return int(run.stdout)
    raise RuntimeError(f"no peak memory counter for container {cid[:12]} (cgroup v1 or memory.peak)")


# --- test stacks left behind ------------------------------------------------------------------------------------
# The compose projects and images the e2e tests and benchmarks create carry the pid of the process that made them:
# gpt2fl-e2e-<pid> (test_compose_demo), flt-<pid> (test_faults_compose), mh-<pid>-server / mh-<pid>-site-N
# (test_multihost), gpt2fl-lat-<pid> (benchmarks/progress_latency.py); images gpt2-fl:e2e-<pid>, gpt2-fl:flt-<pid>,
# gpt2-fl:mh-<pid>, gpt2-fl:lat-<pid>.
TEST_STACK = re.compile(r"^(?:gpt2fl-e2e|flt|mh|gpt2fl-lat)-(\d+)(?:-[a-z0-9-]+)?$")
TEST_IMAGE = re.compile(rf"^{IMAGE_REPO}:(?:e2e|flt|mh|lat)-(\d+)$")


def _docker_lines(*args) -> list:
    if not shutil.which("docker"):
        return []
    run = subprocess.run(["docker", *args], capture_output=True, text=True)
    return [line.strip() for line in run.stdout.splitlines() if line.strip()] if run.returncode == 0 else []


def find_test_stacks() -> dict:
    """{compose project or image: pid} of what the tests made, found by the labels of containers, networks and
    volumes (a stack half torn down still has some) and by image tags."""
    label = "{{.Label \"com.docker.compose.project\"}}"
    names = set(_docker_lines("ps", "-a", "--format", label)) | set(_docker_lines("network", "ls", "--format", label)) \
        | set(_docker_lines("volume", "ls", "--format", label))
    found = {n: int(m.group(1)) for n in names if (m := TEST_STACK.match(n))}
    for image in _docker_lines("image", "ls", "--format", "{{.Repository}}:{{.Tag}}"):
        if m := TEST_IMAGE.match(image):
            found[image] = int(m.group(1))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_test_stacks(pid: int = None) -> list:
    """Tear down the test stacks of `pid` (the finaliser of a test session), or, without a pid, those whose process
    is gone (left by an interrupted run; a running test's stacks are never touched). Returns what was removed."""
    removed = []
    for name, owner in sorted(find_test_stacks().items()):
        if (pid is not None and owner != pid) or (pid is None and pid_alive(owner)):
            continue
        if TEST_IMAGE.match(name):
            subprocess.run(["docker", "image", "rm", "-f", name], capture_output=True)
        else:
            subprocess.run(["docker", "compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "5"],
                           capture_output=True)
            # A container made outside compose with the project's label only (a half-made set-up) stays: remove it.
            left = _docker_lines("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}")
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
        removed.append(name)
    return removed


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fl_deploy.harness.compose_stack", description="Remove the compose stacks "
                                "and images that interrupted test runs left behind (their process is gone).")
    p.add_argument("--remove-stale-test-stacks", action="store_true", required=True)
    p.parse_args(argv)
    for name in remove_test_stacks():
        print(f"removed stale test stack {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
