"""benchmarks/first_step.py's own logic: its argument checks and the copy of an earlier revision it runs. (The
measurement is a benchmark on the compose deployment, not a test.)"""

import os
import subprocess

import pytest

from benchmarks import first_step
from fl_deploy import ROOT


@pytest.mark.parametrize("argv, words", [
    (["--repeat", "0"], "at least 1"),
    (["--before", "no-such-revision-xyz"], "not a git revision"),
])
def test_bad_input_exits_2_naming_it(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        first_step.main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_an_earlier_revision_is_copied_as_git_has_it(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    first_step.copy_variant(head, str(tmp_path))
    tracked = subprocess.run(["git", "ls-tree", "-r", "--name-only", head], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(tracked)
    committed = subprocess.run(["git", "show", f"{head}:fl_deploy/submit_job/__init__.py"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    with open(os.path.join(tmp_path, "fl_deploy", "submit_job", "__init__.py")) as f:
        assert f.read() == committed


def test_the_tiny_job_is_the_demos():
    """The timed job is what `scripts/demo.sh --tiny` submits (docker/tiny-job.env, which demo.sh reads), with two
    rounds."""
    from fl_deploy.host import read_env_file

    with open(os.path.join(ROOT, "scripts", "demo.sh")) as f:
        assert "docker/tiny-job.env" in f.read()
    demo = read_env_file(os.path.join(ROOT, "docker", "tiny-job.env"))
    for name, value in first_step.TINY.items():
        if name != "FL_ROUNDS":
            assert demo[name] == value, name
