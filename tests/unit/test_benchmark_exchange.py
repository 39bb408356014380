"""benchmarks/exchange.py's own logic: the project it deploys, its argument checks. (The measurement itself is a
benchmark, not a test: `benchmarks/exchange.py --model tiny` smoke-runs it in a minute.)"""

import os
import shutil

import pytest
import yaml

from benchmarks import exchange as benchmark_exchange
from fl_deploy import provision
from fl_deploy.project import load_project


def test_bench_project_has_the_sites_and_port_and_keeps_the_rest(tmp_path):
    path = str(tmp_path / "project.yml")
    shutil.copy(os.path.join(benchmark_exchange.ROOT, "project.yml"), path)
    benchmark_exchange.write_bench_project(path, ["site-1", "site-2", "site-3"], 41234)
    project = load_project(path)  # still a valid project for provisioning
    assert project.sites == ("site-1", "site-2", "site-3")
    with open(os.path.join(benchmark_exchange.ROOT, "project.yml")) as f:
        original = yaml.safe_load(f)
    assert project.port == 41234 and project.server == "fl-server"
    assert [a.name for a in project.admins] == [p["name"] for p in original["participants"] if p["type"] == "admin"]
    assert project.builders == original["builders"]


def test_a_scheme_configuration_provisions_kits_with_that_scheme(tmp_path):
    path = str(tmp_path / "project.yml")
    shutil.copy(os.path.join(benchmark_exchange.ROOT, "project.yml"), path)
    config = "plain-offload-grpc"
    benchmark_exchange.write_bench_project(path, ["site-1"], 41234, scheme=benchmark_exchange.CONFIG_SCHEME[config])
    kits = provision.provision(load_project(path), str(tmp_path / "ws"), storage_root=str(tmp_path / "store"),
                               force=False, service_uid=0)
    for kit, config_file in ((kits["site-1"], "fed_client.json"), (kits["fl-server"], "fed_server.json")):
        with open(os.path.join(kit, "startup", config_file)) as f:
            assert '"scheme": "grpc"' in f.read(), (kit, config_file)


def test_the_process_federation_provisions_with_the_projects_builders(tmp_path):
    from fl_deploy import local_federation

    path = str(tmp_path / "project.yml")
    local_federation.write_project(path, 41234, ["site-1"])
    with open(path) as f, open(os.path.join(benchmark_exchange.ROOT, "project.yml")) as g:
        assert yaml.safe_load(f)["builders"] == yaml.safe_load(g)["builders"]


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


def test_cpu_per_round_takes_the_cpu_used_between_round_stamps():
    series = [(t, 1.5 * t) for t in range(0, 21)]  # 1.5 CPU seconds per second, sampled each second
    assert benchmark_exchange.cpu_per_round(series, [2.5, 10.0, 18.0]) == [12.0, 12.0]
    assert benchmark_exchange.cpu_per_round(series, [-3, 4]) == [None]  # no sample before the round began


def test_tree_sampler_counts_a_busy_child_and_keeps_it_after_it_exits():
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                               "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass'])"])
    sampler = benchmark_exchange.TreeSampler({"site": parent})
    sampler.start()
    parent.wait(30)
    time.sleep(0.5)
    sampler.stop()
    assert sampler.peak["site"] > 0
    assert sampler.cpu_series[-1][1] >= 0.3  # most of the child's 0.6 s busy loop, kept after it exited


FRAGMENT = """
a = bytearray(20 << 20); del a            # a large free (< 32 MiB): glibc raises its mmap threshold to it
bufs = [bytearray(5 << 20) for _ in range(60)]
keep = bufs[::2]; del bufs                # 150 MB live, 150 MB freed in between
print(int(open('/proc/self/statm').read().split()[1]) * 4096)
"""


def test_the_containers_malloc_setting_returns_freed_tensors_to_the_os():
    """docker/services.yaml's default GLIBC_TUNABLES for the server (the benchmark's server process gets it too):
    freed 5 MiB buffers leave the process; with glibc's defaults ("plain-offload-heap") they stay resident."""
    import subprocess
    import sys

    everyone, server = benchmark_exchange.process_env({})
    assert everyone == {} and server == {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304"}
    _, heap = benchmark_exchange.process_env(benchmark_exchange.CONFIGS["plain-offload-heap"][1])
    assert heap == {"GLIBC_TUNABLES": ""}

    def resident(env):
        run = subprocess.run([sys.executable, "-c", FRAGMENT], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True)
        return int(run.stdout) / 2**20

    tuned, default = resident(server), resident(heap)
    assert tuned < 150 + 80, tuned           # the live buffers and the interpreter
    assert default > tuned + 100, (default, tuned)
