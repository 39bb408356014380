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
    from fl_deploy.harness import local_federation

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
    assert everyone == {} and server == {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1",
                                         "NVFLARE_ENABLE_JEMALLOC_PRELOAD": "false"}
    _, heap = benchmark_exchange.process_env(benchmark_exchange.CONFIGS["plain-offload-heap"][1])
    assert heap["GLIBC_TUNABLES"] == ""
    everyone, jemalloc = benchmark_exchange.process_env(benchmark_exchange.CONFIGS["plain-offload-jemalloc"][1])
    assert everyone == {} and jemalloc == {"GLIBC_TUNABLES": "", "NVFLARE_ENABLE_JEMALLOC_PRELOAD": "true"}

    def resident(env):
        run = subprocess.run([sys.executable, "-c", FRAGMENT], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True)
        return int(run.stdout) / 2**20

    tuned, default = resident(server), resident(heap)
    assert tuned < 150 + 80, tuned           # the live buffers and the interpreter
    assert default > tuned + 100, (default, tuned)


@pytest.mark.parametrize("argv, words", [
    (["--model", "gpt2-xl"], "unknown model size"),
    (["--model", ","], "unknown model size"),
])
def test_bad_model_sizes_exit_2_naming_them(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        benchmark_exchange.main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_each_gpt2_size_has_the_parameter_count_its_name_says():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from fl_deploy import make_tiny_assets

    assert benchmark_exchange.MODELS == ("tiny", "gpt2-124m", "gpt2-355m", "gpt2-774m")
    for name, overrides in make_tiny_assets.GPT2_SIZES.items():
        with torch.device("meta"):
            model = GPT2LMHeadModel(GPT2Config(**overrides))
        millions = sum(p.numel() for p in model.parameters()) / 1e6  # the tied lm_head once
        assert abs(millions - int(name.split("-")[1][:-1])) < 1.0, (name, millions)
    assert 3.0e9 < benchmark_exchange.large_model_bytes() < 3.2e9  # 774M float32, the tied lm_head once


def row(model, mb, n, server, site, config="plain-offload"):
    return {"model": model, "model_MB": mb, "sites": n, "config": config, "status": "FINISHED:COMPLETED",
            "server_peak_GiB": server, "site_peak_GiB_max": site}


def test_size_projection_fits_a_line_through_the_sizes_and_keeps_the_old_method_beside_it():
    gib, large = benchmark_exchange.GIB, benchmark_exchange.large_model_bytes()
    base = {"server": 0.5 * gib, "site": 0.5 * gib}
    # server = 0.8 GiB + 2 copies of the model; the smallest size alone would see 0.3 GiB / 0.5 GB as copies
    rows = [row("gpt2-124m", 500.0, 2, (0.8 * gib + 2 * 500e6) / gib, 2.0),
            row("gpt2-355m", 1400.0, 2, (0.8 * gib + 2 * 1400e6) / gib, 4.0),
            row("gpt2-774m", 3100.0, 2, 6.5, 9.0)]
    lines = benchmark_exchange.size_projection(rows, base)
    server = next(line for line in lines if "| plain-offload | 2 | server |" in line)
    cells = [c.strip() for c in server.split("|")[1:-1]]
    alone = (0.5 * gib + large * ((0.8 * gib + 2 * 500e6) - 0.5 * gib) / 500e6) / gib
    assert cells[3].startswith(f"{alone:.2f} (gpt2-124m:")
    assert cells[4] == f"0.80 + 2.00 x {large / 1e9:.2f} GB = {(0.8 * gib + 2 * large) / gib:.2f}"
    assert cells[5] == "6.50"  # the measured gpt2-large row is shown, not fitted


def test_fit_sizes_is_least_squares():
    assert benchmark_exchange.fit_sizes([(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]) == pytest.approx((1.0, 2.0))


def test_streaming_levers_are_nvflares_own_keys_and_its_config_reader_takes_them(tmp_path):
    """The lever configurations' local/comm_config.json, laid out as sub_start.sh lays out a workspace (the kit
    copied to <ws>/kit, local/ linked), is what NVFlare's CommConfigurator reads."""
    from nvflare.fuel.f3.comm_config import CommConfigurator, VarName
    from nvflare.fuel.utils.config_service import ConfigService

    names = {v for k, v in vars(VarName).items() if k.isupper()}
    for config, settings in benchmark_exchange.COMM_CONFIGS.items():
        assert config in benchmark_exchange.CONFIGS and set(settings) <= names, config
    kit = tmp_path / "ws" / "kit"
    (kit / "local").mkdir(parents=True)
    (tmp_path / "ws" / "local").symlink_to(kit / "local")
    benchmark_exchange.write_comm_config(str(kit), benchmark_exchange.COMM_CONFIGS["plain-offload-window16"])
    ConfigService.reset()
    CommConfigurator.reset()
    try:
        ConfigService.initialize(section_files={}, config_path=[str(tmp_path / "ws")])
        conf = CommConfigurator()
        assert conf.get_streaming_window_size(0) == 16 << 20 and conf.get_streaming_ack_interval(0) == 4 << 20
    finally:
        ConfigService.reset()
        CommConfigurator.reset()
