"""The GPU image: the site's GPU/driver start check (docker/gpu_check.py, with CUDA, nvidia-smi and the device
nodes mocked) and the build option for torch's CUDA 12 build (the path docker/install_packages.sh and
scripts/build_wheelhouse.sh take for it, with pip mocked)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types

import pytest
import yaml

from fl_deploy import ROOT

spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "docker", "gpu_check.py"))
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def fake_torch(cuda="13.0", available=True, gpus=(("NVIDIA H100 80GB HBM3", (9, 0)),), warning=""):
    """A stand-in for torch with its CUDA side as given (the CPU wheel cannot pretend to have GPUs)."""
    import warnings

    def is_available():
        if warning:
            warnings.warn(warning)
        return available

    return types.SimpleNamespace(
        __version__="2.13.0" + ("" if cuda and cuda.startswith("13") else f"+cu{cuda.replace('.', '')}" if cuda else "+cpu"),
        version=types.SimpleNamespace(cuda=cuda),
        cuda=types.SimpleNamespace(is_available=is_available, device_count=lambda: len(gpus),
                                   get_device_name=lambda i: gpus[i][0], get_device_capability=lambda i: gpus[i][1]))


def nvidia_smi(rows=None, returncode=0):
    """subprocess.run as nvidia-smi answers --query-gpu=name,driver_version (None: not installed)."""
    def run(cmd, **kw):
        assert cmd[0] == "nvidia-smi"
        if rows is None:
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(cmd, returncode, "\n".join(f"{n}, {d}" for n, d in rows) + "\n", "")
    return run


@pytest.fixture
def dev(tmp_path):
    """A /dev with GPU 0 reserved (the node the NVIDIA runtime adds), plus the control node every host has."""
    d = tmp_path / "dev"
    d.mkdir()
    (d / "nvidiactl").touch()
    (d / "nvidia0").touch()
    return str(d)


def run_check(monkeypatch, capsys, dev, torch, smi, proc="/nonexistent"):
    monkeypatch.setitem(sys.modules, "torch", torch)
    code = gpu_check.main([], dev=dev, proc=proc, run=smi)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_usable_gpus_log_one_line_with_name_driver_cuda_and_bf16(monkeypatch, capsys, dev):
    torch = fake_torch(gpus=(("NVIDIA H100 80GB HBM3", (9, 0)), ("Tesla T4", (7, 5))))
    code, out, err = run_check(monkeypatch, capsys, dev, torch, nvidia_smi([("NVIDIA H100 80GB HBM3", "580.65.06")]))
    assert code == 0 and err == ""
    assert out.count("\n") == 1
    assert out.startswith("gpu: 2 GPU(s): NVIDIA H100 80GB HBM3 (compute 9.0, bf16 native); Tesla T4 (compute 7.5, "
                          "bf16 not native: fp32); NVIDIA driver 580.65.06; torch 2.13.0, CUDA 13.0")


def test_driver_too_old_for_cuda13_stops_naming_both_drivers_and_the_cuda12_build(monkeypatch, capsys, dev):
    torch = fake_torch(available=False, warning="CUDA initialization: The NVIDIA driver on your system is too old "
                                                "(found version 12040).")
    code, out, err = run_check(monkeypatch, capsys, dev, torch, nvidia_smi([("NVIDIA A100-SXM4-40GB", "550.54.15")]))
    assert code == 2 and out == ""
    assert err.count("\n") == 1  # one sentence
    assert "the host's NVIDIA driver is 550.54.15" in err
    assert "CUDA 13.0, which needs NVIDIA driver 580 or newer" in err
    assert "upgrade the NVIDIA driver on this host to 580 or newer" in err
    assert f"FL_TORCH_CUDA={gpu_check.CUDA12_BUILD} in .env, then docker compose build" in err
    assert "525.60.13" in err and "too old (found version 12040)" in err


def test_driver_too_old_even_for_the_cuda12_build(monkeypatch, capsys, dev):
    torch = fake_torch(cuda="12.9", available=False)
    code, _, err = run_check(monkeypatch, capsys, dev, torch, nvidia_smi([("Tesla V100", "470.82.01")]))
    assert code == 2
    assert "driver is 470.82.01" in err and "needs NVIDIA driver 525.60.13 or newer" in err
    assert "FL_TORCH_CUDA" not in err  # already the CUDA 12 build: only the driver upgrade helps


def test_driver_read_from_proc_when_nvidia_smi_is_missing(monkeypatch, capsys, dev, tmp_path):
    proc = tmp_path / "proc"
    (proc / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.07  Sat Feb 17 2024\n")
    (proc / "gpus" / "0000:01:00.0" / "information").write_text("Model: \t\t NVIDIA L4\nIRQ: 42\n")
    code, _, err = run_check(monkeypatch, capsys, dev, fake_torch(available=False), nvidia_smi(None), str(proc))
    assert code == 2 and "driver is 535.161.07" in err and "580 or newer" in err


def test_no_driver_in_the_container_names_the_container_toolkit(monkeypatch, capsys, dev):
    code, _, err = run_check(monkeypatch, capsys, dev, fake_torch(available=False), nvidia_smi(None))
    assert code == 2
    assert "no NVIDIA driver is visible in the container" in err and "580 or newer" in err
    assert "nvidia-ctk runtime configure --runtime=docker" in err


def test_new_enough_driver_that_torch_cannot_reach(monkeypatch, capsys, dev):
    torch = fake_torch(available=False, warning="CUDA initialization: libcuda.so.1: cannot open shared object file")
    code, _, err = run_check(monkeypatch, capsys, dev, torch, nvidia_smi([("NVIDIA H100", "580.82.07")]))
    assert code == 2
    assert "NVIDIA driver 580.82.07 is new enough" in err and "libcuda.so.1" in err
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in err


def test_cpu_torch_with_reserved_gpus_says_to_rebuild_with_cuda(monkeypatch, capsys, dev):
    code, _, err = run_check(monkeypatch, capsys, dev, fake_torch(cuda=None, available=False),
                             nvidia_smi([("NVIDIA H100", "580.82.07")]))
    assert code == 2
    assert "torch 2.13.0+cpu is a CPU-only build" in err and "driver 580.82.07" in err
    assert "build_wheelhouse.sh without --torch cpu" in err


def test_no_gpu_reserved_trains_on_cpu_without_importing_torch(monkeypatch, capsys, tmp_path):
    (tmp_path / "nvidiactl").touch()  # a control node alone is no GPU
    monkeypatch.setitem(sys.modules, "torch", None)  # an import would raise
    code = gpu_check.main([], dev=str(tmp_path), run=nvidia_smi(None))
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("gpu: none reserved for this site") and "torch 2.13.0" in out


def test_the_site_entrypoint_runs_the_check_and_the_image_ships_it():
    with open(os.path.join(ROOT, "docker", "entrypoint.sh")) as f:
        site_branch = f.read().split('if [ "$role" = site ]; then')[1].split("fi")[0]
    assert "fl-gpu-check || exit 2" in site_branch
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        assert "COPY docker/gpu_check.py /usr/local/bin/fl-gpu-check" in f.read()


def test_every_project_file_the_dockerfile_copies_is_in_the_build_context():
    """.dockerignore is an allow-list: a file the Dockerfile copies but the list leaves out breaks the build."""
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        allowed = {line[1:].strip().rstrip("/") for line in f if line.startswith("!")}
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        copies = [line.split()[1:-1] for line in f if line.startswith("COPY ") and "--from" not in line]
    sources = {src.rstrip("/") for srcs in copies for src in srcs}
    assert sources and sources <= allowed, sources - allowed


# --- the CUDA 12 build option -----------------------------------------------------------------------------------

def fake_tools(tmp_path, torch_version: str) -> dict:
    """A pip that logs its arguments, one per line and a blank line after each call, and a python that reports
    torch_version as installed."""
    log = tmp_path / "pip.log"
    pip = tmp_path / "pip"
    pip.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done >> {log}\necho >> {log}\n')
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho {torch_version}\n")
    for tool in (pip, python):
        tool.chmod(0o755)
    return {"PIP": str(pip), "PYTHON": str(python), "log": log}


def pip_calls(log) -> list:
    return [call.split("\n") for call in log.read_text().strip("\n").split("\n\n")]


def install(tmp_path, torch_version, wheels=(), torch_cuda=None):
    tools = fake_tools(tmp_path, torch_version)
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    for name in wheels:
        (wheelhouse / name).touch()
    env = dict(os.environ, PIP=tools["PIP"], PYTHON=tools["PYTHON"])
    env.pop("TORCH_CUDA", None)
    if torch_cuda is not None:
        env["TORCH_CUDA"] = torch_cuda
    run = subprocess.run(["bash", os.path.join(ROOT, "docker", "install_packages.sh"), "/opt/venv", str(wheelhouse),
                          ROOT], env=env, capture_output=True, text=True, timeout=60)
    return run, (pip_calls(tools["log"]) if tools["log"].exists() else [])


def test_cuda12_build_installs_torch_from_pytorchs_cu129_index_and_the_rest_from_pypi(tmp_path):
    run, (torch_call, rest_call) = install(tmp_path, "2.13.0+cu129", torch_cuda="cu129")
    assert run.returncode == 0, run.stderr
    assert torch_call[:5] == ["install", "--no-cache-dir", "--index-url", "https://download.pytorch.org/whl/cu129",
                              "-r"] and torch_call[5].endswith("requirements-torch.txt")
    assert "--index-url" not in rest_call and rest_call[-1].endswith("requirements.txt")
    assert "torch 2.13.0+cu129 installed (TORCH_CUDA=cu129)" in run.stdout


def test_default_build_installs_pypis_torch(tmp_path):
    run, (torch_call, _) = install(tmp_path, "2.13.0")
    assert run.returncode == 0, run.stderr
    assert torch_call == ["install", "--no-cache-dir", "-r", os.path.join(ROOT, "requirements-torch.txt")]


def test_a_wheelhouse_installs_offline_and_must_hold_the_asked_build(tmp_path):
    wheel = "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    run, calls = install(tmp_path, "2.13.0", wheels=[wheel], torch_cuda="cu129")
    assert all(call[2:5] == ["--no-index", "--find-links", str(tmp_path / "wheels")] for call in calls)
    assert run.returncode == 2
    assert "torch 2.13.0 was installed but TORCH_CUDA=cu129 asks for its +cu129 build" in run.stderr
    assert "scripts/build_wheelhouse.sh --torch cu129" in run.stderr


def test_an_unknown_torch_build_is_refused_before_installing(tmp_path):
    run, calls = install(tmp_path, "2.13.0", torch_cuda="cuda12")
    assert run.returncode == 2 and calls == [] and "not a torch build" in run.stderr


def test_compose_passes_fl_torch_cuda_to_the_build_stage():
    with open(os.path.join(ROOT, "docker", "services.yaml")) as f:
        args = yaml.safe_load(f)["services"]["fl-common"]["build"]["args"]
    assert args["TORCH_CUDA"] == "${FL_TORCH_CUDA:-}"
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        build_stage = f.read().split("FROM ${BASE_IMAGE} AS build")[1].split("\nFROM ")[0]
    assert "ARG TORCH_CUDA=" in build_stage
    assert re.search(r'TORCH_CUDA="\$\{TORCH_CUDA\}" bash /tmp/req/install_packages\.sh', build_stage)
    with open(os.path.join(ROOT, ".env.example")) as f:
        assert re.search(r"^FL_TORCH_CUDA=$", f.read(), re.M)


def wheelhouse_project(tmp_path, torch_wheels=()):
    """A copy of build_wheelhouse.sh in a project folder of its own, with a python whose pip logs its calls."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "docker" / "wheels").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "build_wheelhouse.sh"), project / "scripts")
    for name in ("requirements.txt", "requirements-torch.txt"):
        shutil.copy(os.path.join(ROOT, name), project)
    for name in torch_wheels:
        (project / "docker" / "wheels" / name).touch()
    log = tmp_path / "pip.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then echo 3.11; exit 0; fi\n'
                      f'for a in "$@"; do echo "$a"; done >> {log}\necho >> {log}\n'
                      f'touch docker/wheels/torch-2.13.0+cu129-cp311-cp311-linux_x86_64.whl\n')
    python.chmod(0o755)
    return project, python, log


def test_wheelhouse_option_fetches_the_cuda12_build_from_pytorchs_index(tmp_path):
    project, python, log = wheelhouse_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FL_TORCH_CUDA"}
    run = subprocess.run(["bash", str(project / "scripts" / "build_wheelhouse.sh"), "--torch", "cu129"],
                         env=dict(env, PYTHON=str(python)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    torch_call, rest_call = pip_calls(log)
    assert torch_call[:6] == ["-m", "pip", "wheel", "-q", "-w", "docker/wheels"]
    assert torch_call[6:8] == ["--index-url", "https://download.pytorch.org/whl/cu129"]
    assert "--index-url" not in rest_call and rest_call[6:8] == ["--find-links", "docker/wheels"]
    # .env's FL_TORCH_CUDA picks the same build when no --torch is given (the image's build argument too)
    (project / ".env").write_text("FL_TORCH_CUDA=cu129\n")
    log.unlink()
    run = subprocess.run(["bash", str(project / "scripts" / "build_wheelhouse.sh")], env=dict(env, PYTHON=str(python)),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and pip_calls(log)[0][6:8] == ["--index-url", "https://download.pytorch.org/whl/cu129"]


def test_wheelhouse_refuses_to_mix_torch_builds(tmp_path):
    project, python, log = wheelhouse_project(tmp_path, ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"])
    run = subprocess.run(["bash", str(project / "scripts" / "build_wheelhouse.sh"), "--torch", "cu129"],
                         env=dict(os.environ, PYTHON=str(python)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and not log.exists()
    assert "holds torch-2.13.0+cpu" in run.stderr and "rm docker/wheels/*.whl" in run.stderr
