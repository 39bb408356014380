"""fl_deploy/docker_engine.py through scripts/check_host.py, on hosts unlike this one (issue 24, case 7), each
played by a stand-in `docker` that answers as that host's would: GPUs through NVIDIA's hook, the runtime or CDI;
a Compose older than the compose files; rootless Docker; Podman behind the `docker` command."""

import json
import os
import stat
import subprocess
import sys

import pytest

from fl_deploy import IMAGE_UID, docker_engine
from fl_deploy.harness import local_federation

CHECK_HOST = os.path.join(local_federation.ROOT, "scripts", "check_host.py")
PODMAN_INFO = {"host": {"security": {"rootless": True}, "ociRuntime": {"name": "crun"}},
               "version": {"APIVersion": "5.2.2", "Version": "5.2.2"}, "store": {}, "registries": {}}


def check_host(tmp_path, *args, info=None, compose="v2.40.3", version="Docker version 28.0.0, build 1"):
    """scripts/check_host.py against a stand-in docker answering `docker info --format {{json .}}` with ``info``,
    `docker compose version --short` with ``compose`` and `docker --version` with ``version``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "info.json").write_text(json.dumps(info if info is not None else {"ServerVersion": "28.0.0"}))
    script = bin_dir / "docker"
    script.write_text(f"""#!/bin/sh
case "$*" in
  "info --format {{{{json .}}}}") cat {tmp_path / "info.json"};;
  "info --format"*) echo '"28.0.0"';;
  "compose version"*) echo "{compose}";;
  "--version") echo "{version}";;
esac
exit 0
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FL_")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run([sys.executable, CHECK_HOST, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("compose, words", [
    ("v2.17.3", ["Docker Compose 2.17.3 is older than 2.20.0", "include (compose.yaml) from 2.20.0",
                 "!reset (compose.cpu.yaml, docker/site-host.yaml) from 2.18.0"]),
    ("2.19.1", ["Docker Compose 2.19.1 is older than 2.20.0", "include (compose.yaml) from 2.20.0"]),
    ("2.32.1", ["Docker Compose 2.32.1 drops the depends_on of services that use extends", "fixed in 2.33.0"]),
])
def test_a_compose_older_than_the_compose_files_is_refused_naming_the_minimum(tmp_path, compose, words):
    run = check_host(tmp_path, "--cpu", compose=compose)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
    for w in words:
        assert w in run.stderr, run.stderr
    assert ("!reset" in run.stderr) == (compose == "v2.17.3")  # only the features this version lacks are named


@pytest.mark.parametrize("compose", ["2.20.0", "v2.33.0", "2.40.3", "2.24.6-desktop.1", "5.0.1"])
def test_composes_that_read_the_files_pass(compose):
    assert docker_engine.compose_problem(compose) == ""


def nvidia_spec(tmp_path):
    cdi = tmp_path / "cdi"
    cdi.mkdir(exist_ok=True)
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [{name: all}]\n")
    (cdi / "other.yaml").write_text("cdiVersion: 0.5.0\nkind: vendor.com/fpga\n")
    return cdi


def test_each_gpu_path_docker_serves_is_taken(tmp_path):
    """A working host is not refused for lacking the `nvidia` runtime entry: the hook or CDI serve Compose's
    driver: nvidia reservation as well (moby daemon/nvidia_linux.go; moby/moby#50228 from Docker 29.2.0)."""
    cdi = nvidia_spec(tmp_path)
    nothing = dict(which=lambda name: None, driver=lambda: "")
    code, line = docker_engine.gpu_choice({"Runtimes": {"runc": {}}}, which=lambda n: f"/usr/bin/{n}",
                                          driver=lambda: "")
    assert code == 0 and line == ("GPUs through NVIDIA's hook /usr/bin/nvidia-container-runtime-hook (Docker's "
                                  "built-in nvidia device driver)")
    assert docker_engine.gpu_choice({"Runtimes": {"nvidia": {}}}, **nothing) == (
        0, "GPUs through the nvidia runtime registered in Docker")
    code, line = docker_engine.gpu_choice({"ServerVersion": "29.2.0", "CDISpecDirs": [str(cdi)]}, **nothing)
    assert (code, line) == (0, f"GPUs through CDI ({cdi / 'nvidia.yaml'}; Docker 29.2.0 maps driver: nvidia onto it)")
    # CDI where this Docker does not map driver: nvidia onto it, or has CDI off: the fix, never CPU.
    code, line = docker_engine.gpu_choice({"ServerVersion": "27.5.1", "CDISpecDirs": [str(cdi)]}, **nothing)
    assert code == 2 and "through CDI only from Docker Engine 29.2.0 (moby/moby#50228): upgrade Docker" in line
    code, line = docker_engine.gpu_choice({"ServerVersion": "26.1.0"}, cdi_specs=lambda dirs: [str(cdi)], **nothing)
    assert code == 2 and '"features": {"cdi": true}' in line
    code, line = docker_engine.gpu_choice({}, which=lambda n: None, driver=lambda: "NVRM version: 580.65.06")
    assert code == 2 and "this host has an NVIDIA GPU (NVRM version: 580.65.06) but Docker cannot pass it" in line
    assert docker_engine.gpu_choice({}, **nothing)[0] == 3  # no GPU at all: the demo's CPU overlay
    # Docker 29's own list of the CDI devices it found; a GPU host whose CDI-reading Docker lacks the spec.
    found = {"ServerVersion": "29.3.0", "CDISpecDirs": ["/nonexistent"],
             "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=0"}]}
    assert docker_engine.gpu_choice(found, **nothing) == (
        0, "GPUs through CDI (nvidia.com/gpu=0; Docker 29.3.0 maps driver: nvidia onto it)")
    code, line = docker_engine.gpu_choice({"ServerVersion": "29.3.0", "CDISpecDirs": ["/nonexistent"]},
                                          which=lambda n: "/usr/bin/nvidia-ctk" if n == "nvidia-ctk" else None,
                                          driver=lambda: "NVRM version: 580.65.06")
    assert code == 2 and "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in line


def test_check_host_accepts_a_cdi_host_without_the_nvidia_runtime(tmp_path):
    info = {"ServerVersion": "29.2.0", "Runtimes": {"runc": {}}, "CDISpecDirs": [str(nvidia_spec(tmp_path))]}
    run = check_host(tmp_path, info=info)
    assert run.returncode == 0 and "host ok" in run.stdout, run.stderr


def test_rootless_docker_prints_the_chown_to_the_mapped_uid(tmp_path):
    subuid = "ann:100000:65536\nbob:165536:65536\n"
    line = docker_engine.rootless_warning(IMAGE_UID, subuid, user="ann", uid=1000, image="gpt2-fl:2.9.0")
    host_uid = 100000 + IMAGE_UID - 1
    assert line.startswith(f"Docker runs rootless: the containers' uid {IMAGE_UID} is uid {host_uid} on this host")
    assert f"sudo chown -R {host_uid}:{host_uid} workspace/kits assets" in line
    assert f'docker run --rm -u 0 -v "$PWD/workspace/kits:/d" --entrypoint chown gpt2-fl:2.9.0 -R ' \
           f"{IMAGE_UID}:{IMAGE_UID} /d" in line
    assert "usermod --add-subuids" in docker_engine.rootless_warning(IMAGE_UID, subuid, user="carl", uid=1002)
    # Through check_host: Docker's own marker in `docker info`; a warning, the host still passes.
    info = {"ServerVersion": "28.0.0", "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless"]}
    run = check_host(tmp_path, "--cpu", info=info)
    assert run.returncode == 0 and "warning: Docker runs rootless" in run.stderr, run.stderr


def test_podman_behind_the_docker_command_is_named_with_what_works(tmp_path):
    run = check_host(tmp_path, "--cpu", info=PODMAN_INFO, version="podman version 5.2.2")
    assert run.returncode == 0, run.stderr
    assert "warning: `docker` here is Podman 5.2.2: what is meant to work (Podman's documentation) is Docker " \
           "Compose v2 on Podman's Docker-API socket" in run.stderr, run.stderr
    assert "healthchecks run only where Podman has systemd timers" in run.stderr
    assert "warning: Docker runs rootless" in run.stderr  # Podman's own rootless marker
    run = check_host(tmp_path, info=PODMAN_INFO, version="podman version 5.2.2")  # GPUs requested
    assert run.returncode == 2 and "GPUs through Podman are not checked by this project" in run.stderr
    assert docker_engine.gpu_choice(PODMAN_INFO)[0] == 2  # the demo stops too, never a Docker fix for Podman
    # The Docker CLI on Podman's socket: `docker --version` is Docker's, `docker info` is Podman's.
    assert docker_engine.podman("Docker version 27.3.1, build ce12230", PODMAN_INFO) == "5.2.2"
    assert docker_engine.podman("Docker version 27.3.1, build ce12230", {"ServerVersion": "27.3.1"}) == ""


def test_selinux_enforcing_names_the_label_the_bind_mounts_need(tmp_path):
    """SELinux cannot be switched on here: the enforce flag is a file the check is pointed at; this filesystem has
    no label on the folder, as an unlabelled one reads."""
    (tmp_path / "enforce").write_text("1\n")
    line = docker_engine.selinux_warning(str(tmp_path), enforce_path=str(tmp_path / "enforce"))
    assert line.startswith(f"SELinux is enforcing and {tmp_path} is labelled ") and "not container_file_t" in line
    assert f"chcon -Rt container_file_t {tmp_path}" in line and "semanage fcontext" in line
    (tmp_path / "enforce").write_text("0\n")  # permissive
    assert docker_engine.selinux_warning(str(tmp_path), enforce_path=str(tmp_path / "enforce")) == ""
    assert docker_engine.selinux_warning(str(tmp_path), enforce_path=str(tmp_path / "none")) == ""  # no SELinux


@pytest.mark.parametrize("security, user", [('["name=seccomp,profile=builtin"]', "1000:1000"),
                                            ('["name=seccomp,profile=builtin","name=rootless"]', "0:0")])
def test_the_tools_run_in_the_image_as_you_under_rootless_docker_too(tmp_path, security, user):
    """scripts/in_image.sh runs the project's tools as you. Under rootless Docker your uid inside the container maps
    to a subordinate uid that cannot write this folder; the container's root is you: it runs as 0:0 there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "docker").write_text(f"""#!/bin/sh
echo "docker $*" >> {log}
case "$*" in
  "compose config --images") echo "gpt2-fl:2.9.0";;
  "info --format"*) echo '{security}';;
esac
exit 0
""")
    (bin_dir / "docker").chmod(0o755)
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # you: uid and gid 1000
    (bin_dir / "id").chmod(0o755)
    run = subprocess.run(["bash", os.path.join(local_federation.ROOT, "scripts", "in_image.sh"), "scripts/x.py"],
                         env=dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin"), capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert f"docker run --rm -u {user} -e HOME=/tmp" in log.read_text(), log.read_text()
