"""benchmarks/upstream_scenario.py: the pack it carries to a machine without network or nvflare (pip mocked: a dry
run of the packaging), and the command it runs there. The scenario itself is a benchmark for a 16-core machine."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import upstream_scenario as us


def fake_download(names_sizes: dict, calls: list):
    """subprocess.run as `pip download -d DIR ...` answers: it writes these wheels (name -> bytes) into DIR."""
    def run(cmd, **kw):
        calls.append(cmd)
        if cmd[1:4] == ["-m", "pip", "download"]:
            dest = cmd[cmd.index("-d") + 1]
            for name, size in names_sizes.items():
                with open(os.path.join(dest, name), "wb") as f:
                    f.truncate(size)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


WHEELS = {
    "nvflare-2.9.0-py3-none-any.whl": 3_600_000,
    "grpcio-1.85.3-cp312-cp312-manylinux2014_x86_64.whl": 7_000_000,
    "tensorboard-2.21.0-py3-none-any.whl": 5_500_000,
    "pydantic_core-2.41.5-cp312-cp312-manylinux_2_17_x86_64.whl": 2_000_000,
    "typing_extensions-4.15.0-py3-none-any.whl": 45_000,
    "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl": 900_000_000,
    "nvidia_cublas-13.1.1.3-py3-none-manylinux_2_27_x86_64.whl": 500_000_000,
    "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl": 16_000_000,
    "huggingface_hub-1.31.0-py3-none-any.whl": 600_000,
}


def test_pack_keeps_what_the_machine_lacks_for_each_asked_python_and_writes_its_manifest(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(us.subprocess, "run", fake_download(WHEELS, calls))
    out = tmp_path / "wheels"
    manifest = us.pack(str(out), ["3.11", "3.12"])
    kept = sorted(["nvflare-2.9.0-py3-none-any.whl", "grpcio-1.85.3-cp312-cp312-manylinux2014_x86_64.whl",
                   "tensorboard-2.21.0-py3-none-any.whl", "typing_extensions-4.15.0-py3-none-any.whl",
                   "pydantic_core-2.41.5-cp312-cp312-manylinux_2_17_x86_64.whl"])
    assert sorted(os.listdir(out)) == sorted(kept + ["manifest.json"])  # torch, CUDA, numpy, flask: not packed
    with open(out / "manifest.json") as f:
        assert json.load(f) == manifest
    assert manifest["versions"] == {"3.11": kept, "3.12": kept}
    assert manifest["bytes"] == 3_600_000 + 7_000_000 + 5_500_000 + 2_000_000 + 45_000  # each file once
    assert [c[c.index("--python-version") + 1] for c in calls] == ["3.11", "3.12"]
    assert all("--only-binary=:all:" in c for c in calls)
    assert "nvflare==2.9.0" in calls[0] and "tensorboard==2.21.0" in calls[0]  # requirements.txt's pins


def test_pack_over_64_mib_stops_naming_the_size(tmp_path, monkeypatch, capsys):
    big = {"nvflare-2.9.0-py3-none-any.whl": 3_600_000, "grpcio-1.85.3-cp311-cp311-linux_x86_64.whl": 70 << 20}
    monkeypatch.setattr(us.subprocess, "run", fake_download(big, []))
    with pytest.raises(SystemExit) as e:
        us.pack(str(tmp_path / "w"), ["3.11"])
    assert e.value.code == 2 and "over the 64 MiB" in capsys.readouterr().err


def test_the_wheels_of_another_python_are_refused_with_the_pack_command(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"versions": {"3.9": []}}))
    with pytest.raises(SystemExit) as e:
        us.install(str(tmp_path), str(tmp_path / "t"))
    err = capsys.readouterr().err
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert e.value.code == 2 and f"pack --python-version {here}" in err and "packed for Python 3.9" in err


def test_run_installs_into_its_own_folder_and_runs_the_benchmark_with_it_first(tmp_path, monkeypatch):
    installed, commands = [], []
    monkeypatch.setattr(us, "install", lambda wheels, target: installed.append((wheels, target)))
    monkeypatch.setattr(us.subprocess, "run",
                        lambda cmd, env, cwd: commands.append((cmd, env)) or subprocess.CompletedProcess(cmd, 0))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "manifest.json").write_text("{}")
    assert us.main(["run", "--wheels", str(tmp_path / "w"), "--target", str(tmp_path / "t"),
                    "--out", str(tmp_path / "out")]) == 0
    assert installed == [(str(tmp_path / "w"), str(tmp_path / "t"))]
    (cmd, env), = commands
    assert cmd[1].endswith(os.path.join("benchmarks", "exchange.py"))
    assert cmd[2:] == ["--deployment", "processes", "--model", "gpt2-774m", "--sites", "6", "--rounds", "2",
                       "--configs", "plain-offload", "--project", "", "--out", str(tmp_path / "out")]
    assert env["PYTHONPATH"].split(os.pathsep)[:3] == [str(tmp_path / "t"), us.ROOT, os.path.join(us.ROOT, "app_code")]


def test_run_without_a_pack_says_how_to_make_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        us.main(["run", "--wheels", str(tmp_path)])
    assert e.value.code == 2 and "upstream_scenario.py pack" in capsys.readouterr().err


def test_the_needed_packages_are_not_left_out():
    assert not any(us.provided(us.canonical(n)) for n in us.NEEDED)
    assert us.provided("torch") and us.provided("nvidia-cudnn-cu13") and not us.provided("typing-extensions")
    assert us.provided("flask") and not us.provided("grpcio")


def test_nvflares_runtime_imports_none_of_the_unused():
    """What UNUSED leaves out is imported only by NVFlare's dashboard, edge web server and Docker job launcher,
    none of which a run of kits as local processes loads (PIL: by TensorBoard image summaries and the agent tool)."""
    import re

    import nvflare

    root = os.path.dirname(nvflare.__file__)
    pattern = re.compile(r"^\s*(import|from) (flask|flask_jwt_extended|flask_sqlalchemy|sqlalchemy|gunicorn|docker|PIL)"
                         r"\b", re.M)
    users = set()
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), errors="replace") as f:
                    if pattern.search(f.read()):
                        users.add(os.path.relpath(os.path.join(dirpath, name), root))
    allowed = ("dashboard/", "edge/web/", "app_opt/job_launcher/docker_launcher.py",
               "app_opt/tracking/tb/tb_event_writer.py", "tool/agent/")
    assert users and all(u.startswith(allowed) for u in users), sorted(users)
