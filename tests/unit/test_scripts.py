"""scripts/ holds the commands a person types: each answers --help with exit 0, and the README names each."""

import os
import subprocess
import sys

import pytest

from fl_deploy import ROOT

SCRIPTS = sorted(f for f in os.listdir(os.path.join(ROOT, "scripts")) if not f.startswith("."))


def test_scripts_folder_holds_only_commands():
    assert SCRIPTS and all(f.endswith((".py", ".sh")) for f in SCRIPTS), SCRIPTS
    for f in SCRIPTS:
        assert os.access(os.path.join(ROOT, "scripts", f), os.X_OK), f"scripts/{f} is not executable"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_command_answers_help(name):
    path = os.path.join(ROOT, "scripts", name)
    cmd = [sys.executable, path, "--help"] if name.endswith(".py") else ["bash", path, "--help"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, (name, run.stderr[-2000:])
    assert len(run.stdout.strip().splitlines()) >= 2, (name, run.stdout)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_readme_names_every_command(name):
    with open(os.path.join(ROOT, "README.md")) as f:
        assert f"scripts/{name}" in f.read(), f"README.md does not mention scripts/{name}"


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s.endswith(".py")])
def test_a_python_without_the_projects_packages_gets_one_line_not_a_traceback(name):
    """The host's python3 (here: this Python without its site-packages, -S): a command that needs nvflare, torch or
    PyYAML says so in one line with the two ways to run it; a standard-library command just works."""
    run = subprocess.run([sys.executable, "-S", os.path.join(ROOT, "scripts", name), "--help"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    if run.returncode == 0:
        assert "usage:" in run.stdout, (name, run.stdout[-500:])
        return
    assert "Traceback" not in run.stderr, (name, run.stderr[-2000:])
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, (name, run.stderr)
    assert run.stderr.startswith(f"error: scripts/{name} needs the Python package ") \
        and f"scripts/in_image.sh scripts/{name}" in run.stderr, (name, run.stderr)
