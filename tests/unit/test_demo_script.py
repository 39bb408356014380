"""scripts/demo.sh on a fresh clone, with a stand-in `docker` (issue 15, cases 8 and 16):

* case 8: the image build cannot reach PyPI from inside Docker (pip's CERTIFICATE_VERIFY_FAILED behind a
  TLS-intercepting proxy): the demo builds the wheelhouse on the host (scripts/build_wheelhouse.sh, CPU torch for the
  CPU overlay) and the image from it, or, when the host cannot either, says in one sentence how;
* case 16: what the demo chose (the CPU overlay, by flag or because the host has no NVIDIA GPU; the tiny offline
  job) is recorded in .env, so every later command on the host does the same, and the demo says where.

The stand-in answers what the real engine would up to `docker compose up`, where it stops the demo: the real build,
provisioning and run are the e2e test's (tests/e2e/test_compose_demo.py)."""

import os
import stat
import subprocess

import pytest

from fl_deploy.harness.compose_stack import copy_project
from fl_deploy.host import read_env_file

PIP_BEHIND_PROXY = ("WARNING: Retrying (Retry(total=4)) after connection broken by 'SSLError(SSLCertVerificationError("
                    "1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in "
                    "certificate chain (_ssl.c:1006)'))': /simple/torch/\\nERROR: No matching distribution found for "
                    "torch==2.13.0")


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def clone(tmp_path):
    """A fresh clone (no wheelhouse, no .env) and a PATH whose docker is the stand-in; calls logged."""
    work = tmp_path / "clone"
    work.mkdir()
    copy_project(str(work), with_wheels=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    executable(bin_dir / "docker", f"""#!/bin/bash
echo "docker $*" >> {log}
case "$*" in
  "info --format {{{{json .Runtimes}}}}") echo "${{FAKE_RUNTIMES:-{{\\"runc\\":{{}}}}}}";;
  "info --format {{{{json .}}}}") if [ -n "$FAKE_INFO" ]; then echo "$FAKE_INFO"; else
    rt=${{FAKE_RUNTIMES:-'{{"runc":{{}}}}'}}; echo "{{\\"ServerVersion\\": \\"28.0.0\\", \\"Runtimes\\": $rt}}"; fi;;
  "info --format"*) echo '"28.0.0"';;
  "compose version"*) echo "v2.40.3";;
  "compose config --images") echo "gpt2-fl:2.9.0";;
  *"config --format json") echo '{{"services": {{}}}}';;
  "compose build server")
    if ls docker/wheels/*.whl >/dev/null 2>&1; then echo "built from the wheelhouse"; exit 0; fi
    echo -e "{PIP_BEHIND_PROXY}"; exit 1;;
  "image inspect"*) echo 1530000000;;
  "compose up"*) echo "(stand-in engine: the demo stops here)"; exit 7;;
esac
exit 0
""")
    # The host's pip as scripts/build_wheelhouse.sh calls it: it reaches PyPI (or not, FAKE_PIP_FAILS=1).
    executable(bin_dir / "host-python", f"""#!/bin/bash
if [ "$1" = "-m" ]; then
  echo "pip $*" >> {log}
  [ -z "$FAKE_PIP_FAILS" ] || {{ echo "ERROR: Could not install packages due to an OSError"; exit 1; }}
  touch docker/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl; exit 0
fi
exec python3 "$@"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_", "HF_"))}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PYTHON=str(bin_dir / "host-python"))
    return {"work": work, "env": env, "log": log}


def demo(clone, *args, **env):
    run = subprocess.run(["bash", "scripts/demo.sh", *args], cwd=clone["work"], env={**clone["env"], **env},
                         capture_output=True, text=True, timeout=120)
    calls = clone["log"].read_text().splitlines() if clone["log"].exists() else []
    return run, run.stdout + run.stderr, calls


def test_a_build_that_cannot_reach_pypi_falls_back_to_a_host_wheelhouse(clone):
    run, out, calls = demo(clone, "--cpu", "--tiny")
    assert "CERTIFICATE_VERIFY_FAILED" in out  # the build's own error is shown
    assert "pip cannot reach PyPI from inside Docker here; building the wheelhouse on this host " \
           "(scripts/build_wheelhouse.sh --cpu), then the image from it" in out, out[-3000:]
    assert calls.count("docker compose build server") == 2
    pip = [c for c in calls if c.startswith("pip")]
    assert pip and "--index-url https://download.pytorch.org/whl/cpu" in pip[0]  # CPU torch for the CPU overlay
    assert "built from the wheelhouse" in out and "image built in" in out
    assert run.returncode == 7 and "stand-in engine: the demo stops here" in out  # it went on to start the stack


def test_when_the_host_cannot_build_the_wheelhouse_either_it_says_how(clone):
    run, out, calls = demo(clone, "--cpu", "--tiny", FAKE_PIP_FAILS="1")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: the image build cannot reach PyPI from inside Docker and building the wheelhouse on "
                      "this host failed too (above); fix: run scripts/build_wheelhouse.sh --cpu where pip reaches "
                      "PyPI or a mirror (PIP_INDEX_URL), copy docker/wheels/ here and run the demo again, or docker "
                      "load an image built elsewhere"], run.stderr
    assert not any(c.startswith("docker compose up") for c in calls)


def test_the_demos_choices_are_recorded_for_every_later_command(clone):
    """No --cpu, on a host with no NVIDIA GPU (this one): the demo takes the CPU overlay, with --tiny the offline job;
    both stay in .env, where docker compose and submit_job.py read them."""
    run, out, _ = demo(clone, "--tiny")
    assert "no NVIDIA GPU on this host (no /proc/driver/nvidia/version) and Docker has no nvidia runtime, hook or " \
           "CDI spec: running on CPU" in out, out[-3000:]
    env = read_env_file(str(clone["work"] / ".env"))
    from fl_deploy.harness.compose_stack import tiny_job

    recorded = {"COMPOSE_FILE": "compose.yaml:compose.cpu.yaml", **tiny_job()}
    assert recorded["FL_ROUNDS"] == "3" and recorded["FL_MODEL"] == "/assets/tiny/model"  # the file was read
    assert {k: env.get(k) for k in recorded} == recorded
    assert "recorded in .env (its last block) for every later command on this host: " in out
    text = (clone["work"] / ".env").read_text()
    assert "\nCOMPOSE_FILE=compose.yaml\n" not in text  # .env.example's own line no longer wins
    # What a later command reads: submit_job.py hands these FL_* to make_job; compose takes COMPOSE_FILE.
    from fl_deploy.host import env_settings

    assert env_settings("FL_", str(clone["work"] / ".env"))["FL_MODEL"] == "/assets/tiny/model"

    # A later demo on a GPU host without --tiny: its own choices replace the block; the tiny job is gone.
    run, out, _ = demo(clone, FAKE_RUNTIMES='{"nvidia":{},"runc":{}}')
    env = read_env_file(str(clone["work"] / ".env"))
    assert "COMPOSE_FILE" not in env and "FL_MODEL" not in env and "HF_HUB_OFFLINE" not in env, env
    assert "GPUs through the nvidia runtime registered in Docker" in out and "running on CPU" not in out


@pytest.mark.parametrize("version, rc, said", [
    ("29.2.0", 7, "GPUs through CDI ({spec}; Docker 29.2.0 maps driver: nvidia onto it)"),
    ("28.5.1", 2, "Docker 28.5.1 reads NVIDIA's CDI spec {spec} but serves Compose's GPU reservation (driver: nvidia) "
                  "through CDI only from Docker Engine 29.2.0"),
])
def test_a_cdi_gpu_host_is_never_run_on_cpu_silently(clone, tmp_path, version, rc, said):
    """A GPU host whose Docker serves GPUs through CDI (no nvidia runtime entry): the demo takes the GPU path when
    this Docker maps Compose's driver: nvidia onto CDI, else stops with the fix; it never falls back to CPU."""
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [{name: all}]\n")
    info = f'{{"ServerVersion": "{version}", "Runtimes": {{"runc": {{}}}}, "CDISpecDirs": ["{cdi}"]}}'
    run, out, calls = demo(clone, FAKE_INFO=info)
    assert run.returncode == rc, out[-3000:]
    assert said.format(spec=cdi / "nvidia.yaml") in out, out[-3000:]
    assert rc != 2 or run.stderr.startswith("error: Docker 28.5.1 reads NVIDIA's CDI spec"), run.stderr
    assert "running on CPU (the overlay" not in out
    assert read_env_file(str(clone["work"] / ".env"))["COMPOSE_FILE"] == "compose.yaml"  # .env.example's: GPUs


def test_docker_down_is_named_by_the_host_check_not_taken_for_a_cpu_host(clone):
    """`docker info` without an answer makes no GPU/CPU choice: the host check names the daemon."""
    run, out, calls = demo(clone, FAKE_INFO="not json: Cannot connect to the Docker daemon")
    assert "running on CPU (the overlay" not in out and "GPUs through" not in out, out[-3000:]
    assert read_env_file(str(clone["work"] / ".env"))["COMPOSE_FILE"] == "compose.yaml"  # no CPU overlay chosen
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith("error: "), run.stderr
