"""benchmark_exchange.py's own logic: the project it deploys, its argument checks. (The measurement itself is a
benchmark, not a test: `scripts/benchmark_exchange.py --model tiny` smoke-runs it in a minute.)"""

import os
import shutil

import pytest
import yaml

import benchmark_exchange
import provision


def test_bench_project_has_the_sites_and_port_and_keeps_the_rest(tmp_path):
    path = str(tmp_path / "project.yml")
    shutil.copy(os.path.join(benchmark_exchange.ROOT, "project.yml"), path)
    benchmark_exchange.write_bench_project(path, ["site-1", "site-2", "site-3"], 41234)
    project = provision.load_project(path)  # still a valid project for provisioning
    who = provision.participants(project)
    assert who["sites"] == ["site-1", "site-2", "site-3"]
    with open(os.path.join(benchmark_exchange.ROOT, "project.yml")) as f:
        original = yaml.safe_load(f)
    server = next(p for p in project["participants"] if p["type"] == "server")
    assert server["fed_learn_port"] == 41234 and server["name"] == "fl-server"
    assert who["admins"] == [p["name"] for p in original["participants"] if p["type"] == "admin"]
    assert project["builders"] == original["builders"]


@pytest.mark.parametrize("argv, words", [
    (["--sites", "two"], "integers"),
    (["--configs", "nope"], "unknown configuration"),
    (["--rounds", "0"], "at least 1"),
])
def test_bad_input_exits_2_naming_it(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        benchmark_exchange.main(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err
