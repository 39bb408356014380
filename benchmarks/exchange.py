#!/usr/bin/env python3
"""Benchmark the model exchange (no training): round time, bytes moved, memory, against this machine's TCP floor.

    .venv/bin/python benchmarks/exchange.py                     # 124M GPT-2, 2 sites, every configuration
    .venv/bin/python benchmarks/exchange.py --sites 2,4,8 --configs stream,plain-offload
    .venv/bin/python benchmarks/exchange.py --model tiny        # seconds, for a smoke run
    .venv/bin/python benchmarks/exchange.py --model gpt2-124m,gpt2-355m --configs plain-offload   # two model sizes
    .venv/bin/python benchmarks/exchange.py --deployment compose --sites 2,4   # the real containers

Each configuration provisions a fresh federation and submits an exchange-only job (sites load the global model
and send it back). Two deployments:
  processes  (default) the kits run as local processes (mTLS on loopback, the same kits the containers use);
             memory = each participant's process tree RSS, sampled; raw TCP over loopback.
  compose    the real deployment in an isolated copy of the project: provision.py, the image, compose.yaml with
             the CPU overlay, the job generated and submitted in the admin container; memory = each container's
             resident memory from its cgroup (anon + mapped files, no page cache), sampled; raw TCP from a site
             container to the server container over the compose bridge. Needs Docker with Compose v2.
In the same run it measures raw TCP throughput over the same path, so every ratio compares figures taken on the
same machine at the same time:

    floor = bytes moved in a round (all sites, both directions) / raw TCP throughput
    round time / floor          how far the exchange sits above what the wire allows
    server peak / model bytes   how many model copies the server holds at its peak
    cpu busy                    CPU seconds of all participants in a round / (round time x cores): near 1,
                                the round waits on the CPU (TLS, serialization, copies), not on the wire

With two or more model sizes it also projects each configuration's peaks to gpt2-large (774M) twice: from the
smallest size alone (the runtime measured on the tiny model + that size's model copies, the method of earlier
runs) and from a line fitted through all measured sizes (projection-sizes.md).

Writes <out>/benchmark.csv, benchmark.md, benchmark.png and trace-<model>-<sites>-<config>.csv (each participant's
memory over the run, round starts marked), and prints the table.
"""

import argparse
import csv
import json
import os
import random
import re
import shutil
import socket
import subprocess
import statistics
import sys
import tempfile
import threading
import time

from fl_deploy import IMAGE_REPO, ROOT, make_tiny_assets
from fl_deploy.host import ADMIN_KIT
from fl_deploy import round_stats
from fl_deploy.harness import local_federation
from fl_deploy.project import load_project
GIB = 1024**3


# name -> (make_job flags, extra environment for every participant, what it is)
CONFIGS = {
    "stream": (["--transfer", "tensor"], {}, "NVFlare tensor streaming (TensorServerStreamer/TensorClientStreamer)"),
    "plain": (["--transfer", "memory"], {}, "plain FedAvg messages (FOBS, large tensors through download references); "
              "results held in memory"),
    "plain-offload": (["--transfer", "offload"], {},
                      "plain messages; the server downloads results to disk and aggregates tensor by tensor; "
                      "the global model served to all sites from one shared download (the default job, with the "
                      "server container's malloc setting: GLIBC_TUNABLES from docker/services.yaml)"),
    "plain-offload-heap": (["--transfer", "offload"], {"FL_GLIBC_TUNABLES": ""},
                           "plain-offload with glibc's default malloc: freed large buffers stay in the heap"),
    "plain-offload-per-site": (["--transfer", "offload", "--broadcast", "per-site"], {},
                               "plain-offload with NVFlare's own broadcast: a task copy + one download per site"),
    "plain-offload-whole": (["--transfer", "offload", "--part_mib", "0"], {},
                            "plain-offload with every tensor sent whole (no row blocks): wte is one 154 MB message"),
    "plain-offload-sum": (["--transfer", "offload", "--aggregation", "nvflare"], {},
                          "plain-offload with NVFlare's running sum on the server (no in-place mean)"),
    "plain-offload-part4": (["--transfer", "offload", "--part_mib", "4"], {},
                            "plain-offload with row blocks of at most 4 MiB (default 16)"),
    "plain-offload-gc": (["--transfer", "offload", "--server_memory_gc_rounds", "1"],
                         {"MALLOC_ARENA_MAX": "2"}, "plain-offload + gc/malloc_trim every round + MALLOC_ARENA_MAX=2"),
    "stream-gc": (["--transfer", "tensor", "--server_memory_gc_rounds", "1"], {"MALLOC_ARENA_MAX": "2"},
                  "stream + gc/malloc_trim every round + MALLOC_ARENA_MAX=2"),
    "stream-bf16": (["--transfer", "tensor", "--exchange_dtype", "bfloat16"], {}, "stream, weights sent as bfloat16 (half the bytes)"),
    "plain-offload-bf16": (["--transfer", "offload", "--exchange_dtype", "bfloat16"], {},
                           "plain-offload, weights sent as bfloat16"),
}
# NVFlare's connection schemes, each provisioned in place of project.yml's (StaticFileBuilder's scheme)
SCHEMES = {"http": "websocket over HTTPS (NVFlare's default)", "grpc": "gRPC (HTTP/2)", "tcp": "TLS over plain TCP"}
CONFIG_SCHEME = {f"plain-offload-{s}": s for s in SCHEMES}
for _scheme, _what in SCHEMES.items():
    CONFIGS[f"plain-offload-{_scheme}"] = (["--transfer", "offload"], {}, f"plain-offload, kits provisioned with "
                                           f"scheme {_scheme}: {_what}")
# NVFlare's F3 streaming flow control (nvflare/fuel/f3/streaming/stream_const.py, 2.9.0 defaults: 1 MiB chunks,
# a 64 MiB window of unacknowledged bytes per stream, an ACK every 16 MiB), set per participant as a site-local
# override: the kit's unsigned local/comm_config.json, which NVFlare's CommConfigurator reads at start.
MIB = 1 << 20
COMM_CONFIGS = {
    "plain-offload-window16": {"streaming_window_size": 16 * MIB, "streaming_ack_interval": 4 * MIB},
    "plain-offload-window256": {"streaming_window_size": 256 * MIB, "streaming_ack_interval": 64 * MIB},
}
CONFIGS["plain-offload-window16"] = (["--transfer", "offload"], {}, "plain-offload with a 16 MiB streaming window "
                                     "and an ACK every 4 MiB (NVFlare 2.9: 64 / 16 MiB), local/comm_config.json")
CONFIGS["plain-offload-window256"] = (["--transfer", "offload"], {}, "plain-offload with a 256 MiB streaming window "
                                      "and an ACK every 64 MiB, local/comm_config.json")
CONFIGS["plain-offload-jemalloc"] = (["--transfer", "offload"], {"FL_GLIBC_TUNABLES": "", "FL_SERVER_JEMALLOC": "true"},
                                     "plain-offload with NVFlare's opt-in jemalloc on the server "
                                     "(NVFLARE_ENABLE_JEMALLOC_PRELOAD) in place of glibc's mmap threshold")
CONFIGS["plain-offload-mmap"] = (["--transfer", "offload"], {"FL_GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304",
                                                             "FL_SERVER_JEMALLOC": "false"},
                                 "plain-offload with glibc's malloc and its mmap threshold at 4 MiB on the server, "
                                 "without huge pages (the default before 2026-12-04)")
# Levers of issue 23 (docs/benchmarks/exchange-pace.md), each against plain-offload in the same run:
# the huge-pages default (docker/services.yaml) against plain-offload-mmap, the server's malloc without it
CONFIGS["plain-offload-part-full"] = (["--transfer", "offload", "--part_mib", "16.001"], {},
                                      "plain-offload with wte's row blocks of 5,462 rows (16 MiB + 2 KiB) in place "
                                      "of 5,461 (16 MiB - 1 KiB)")
CONFIGS["plain-offload-poll2"] = (["--transfer", "offload", "--task_request_interval", "2"], {},
                                  "plain-offload with NVFlare's default task request interval (2 s) in place of 0.5 s")
CONFIGS["plain-offload-check05"] = (["--transfer", "offload", "--task_check_period", "0.5"], {},
                                    "plain-offload with NVFlare's FedAvg task check period (0.5 s) in place of 0.1 s")
CONFIGS["plain-offload-chunk32"] = (["--transfer", "offload", "--download_chunk_mib", "32"], {},
                                    "plain-offload with the sites' results downloaded in replies of up to 32 MiB "
                                    "(NVFlare's tensor_download_chunk_size, 2 MiB by default)")
# The deployment's defaults before issue 23's kept levers, both undone at once: the "before" of its one table
CONFIGS["plain-offload-before"] = (["--transfer", "offload", "--task_request_interval", "2"],
                                   {"FL_GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304",
                                    "FL_SERVER_JEMALLOC": "false"},
                                   "plain-offload as deployed before 2026-12-04: the server's malloc without huge "
                                   "pages and NVFlare's 2 s task request interval")
DEFAULT_CONFIGS = "stream,plain,plain-offload-per-site,plain-offload"
# Model sizes (--model): GPT-2's architectures, random init (the exchange does not care about the values), or the
# tiny test model. gpt2-774m is gpt2-large.
MODELS = ("tiny", *make_tiny_assets.GPT2_SIZES)  # the sizes --model takes
LARGE = "gpt2-774m"


def raw_tcp_throughput(total_bytes: int = 2 * GIB, chunk: int = 4 << 20) -> float:
    """Bytes/s of one TCP stream over loopback (no TLS), sender and receiver in this process."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = [0]

    def receive():
        conn, _ = server.accept()
        with conn:
            while received[0] < total_bytes:
                data = conn.recv(chunk)
                if not data:
                    break
                received[0] += len(data)

    t = threading.Thread(target=receive)
    t.start()
    payload = os.urandom(chunk)
    start = time.perf_counter()
    with socket.create_connection(server.getsockname()) as s:
        sent = 0
        while sent < total_bytes:
            s.sendall(payload)
            sent += len(payload)
    t.join()
    elapsed = time.perf_counter() - start
    server.close()
    return received[0] / elapsed


def make_model(kind: str, out: str) -> tuple:
    """(model folder, model bytes as exchanged: the state dict without tied aliases, as app_code sends it) for a
    name of MODELS."""
    from fl_common.model import exchange_state_dict, load_model

    if kind == "tiny":
        path = os.path.join(out, "model")
        if not os.path.isfile(os.path.join(path, "config.json")):
            # the tiny model and its tokenizer, without writing the dataset: no `datasets` needed here
            rng = random.Random(0)
            make_tiny_assets.make_model(path, [make_tiny_assets.review(rng, i % 2) for i in range(400)], 0, 400)
    else:
        path = make_tiny_assets.random_gpt2(out, kind)
    model = load_model(path)
    size = sum(t.numel() * t.element_size() for t in exchange_state_dict(model).values())
    del model
    return path, size


class PeakSampler(threading.Thread):
    """Peak of each named reading (bytes), sampled every ``interval`` s until stop(); with ``cpu`` (a function
    returning the participants' CPU seconds so far) also the series (time, CPU seconds), for cpu_per_round."""

    def __init__(self, readers: dict, interval: float = 0.2, gone=(OSError, ValueError), cpu=None, counters=None):
        super().__init__(daemon=True)
        self.readers, self.interval, self.gone, self.cpu = readers, interval, gone, cpu
        self.counters, self.counter_series = counters, []  # round_stats.TreeCounters: faults and CPU per participant
        self.peak = {name: 0 for name in readers}
        self.series = {name: [] for name in readers}  # (time, bytes): written as the run's memory trace
        self.cpu_series = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            for name, read in self.readers.items():
                try:
                    value = read()
                except self.gone:  # the process or container is gone
                    continue
                self.peak[name] = max(self.peak[name], value)
                self.series[name].append((time.time(), value))
            if self.cpu is not None:
                self.cpu_series.append((time.time(), self.cpu()))
            if self.counters is not None:
                self.counter_series.append((time.time(), self.counters()))
            self.stop_event.wait(self.interval)

    def stop(self) -> dict:
        self.stop_event.set()
        self.join()
        return self.peak


# CPU seconds the participants used between consecutive round stamps, from the sampled (time, CPU s)
cpu_per_round = round_stats.per_round


def TreeSampler(procs: dict) -> PeakSampler:
    """Resident memory of each participant's process tree (kit parent + job process), and their CPU time."""
    import psutil

    roots = {name: psutil.Process(p.pid) for name, p in procs.items()}
    seen = {}  # pid -> last CPU seconds: a job process that exits keeps counting what it used

    def tree(root):
        return [root, *root.children(recursive=True)]

    def tree_rss(root):
        return lambda: sum(p.memory_info().rss for p in tree(root) if p.is_running())

    def cpu():
        for root in roots.values():
            try:
                for p in tree(root):
                    t = p.cpu_times()
                    seen[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        return sum(seen.values())

    counters = round_stats.TreeCounters({"server" if n == "localhost" else n: p.pid for n, p in procs.items()})
    return PeakSampler({name: tree_rss(root) for name, root in roots.items()}, gone=psutil.Error, cpu=cpu,
                       counters=counters)


def CgroupSampler(cids: dict) -> PeakSampler:
    """Resident memory of each container (cgroup memory.stat: anonymous + mapped pages), and their CPU time."""
    from fl_deploy.harness import compose_stack

    cpu_readers = [compose_stack.cpu_seconds_reader(cid) for cid in cids.values()]
    counters = round_stats.TreeCounters({name: round_stats.cgroup_pids(cid) for name, cid in cids.items()})
    return PeakSampler({name: compose_stack.resident_bytes_reader(cid) for name, cid in cids.items()},
                       cpu=lambda: sum(read() for read in cpu_readers), counters=counters)


def streamed_bytes(site_log: str) -> dict:
    """Bytes the tensor streamers report per direction (server->site consumed, site->server produced)."""
    got = [int(b) for b in re.findall(r"consumed blobs from peer .* \((\d+) bytes\)", site_log)]
    sent = [int(b) for b in re.findall(r"produced blobs for peer .* \((\d+) bytes\)", site_log)]
    return {"down": statistics.mean(got) if got else None, "up": statistics.mean(sent) if sent else None}


def wait_finished(job_status, limit: float = 3600) -> str:
    """The job's final status. `nvflare job wait` can come back early when its admin session times out under load
    (8 sites x 124M on 2 cores did), so the status is polled until FINISHED."""
    deadline = time.monotonic() + limit
    while not (status := job_status()).startswith("FINISHED") and time.monotonic() < deadline:
        time.sleep(5)
    return status


# compose variable (docker/services.yaml) -> the server container's environment variable it sets
SERVER_SETTINGS = {"FL_GLIBC_TUNABLES": "GLIBC_TUNABLES", "FL_SERVER_JEMALLOC": "NVFLARE_ENABLE_JEMALLOC_PRELOAD"}


def container_server_env() -> dict:
    """The server container's malloc settings by default (docker/services.yaml: `NAME: ${FL_VAR-default}` or
    `${FL_VAR:-default}`), so processes run the same way: {compose variable: its default}."""
    with open(os.path.join(ROOT, "docker", "services.yaml")) as f:
        text = f.read()
    return {var: re.search(r"\$\{" + var + r":?-([^}]*)\}", text).group(1) for var in SERVER_SETTINGS}


def container_glibc_tunables() -> str:
    """The GLIBC_TUNABLES the server container gets by default."""
    return container_server_env()["FL_GLIBC_TUNABLES"]


def process_env(config_env: dict) -> tuple:
    """A configuration's environment as the kits' processes take it: (every participant, the server only).
    The compose variables of SERVER_SETTINGS become the server's own variables, by default the container's."""
    env = dict(config_env)
    defaults = container_server_env()
    return env, {name: env.pop(var, defaults[var]) for var, name in SERVER_SETTINGS.items()}


def write_comm_config(kit: str, settings: dict):
    """A site-local override of NVFlare's communication settings: the kit's local/comm_config.json (local/ is the
    participant's own, unsigned part of the kit; sub_start.sh copies it into the workspace at every start)."""
    path = os.path.join(kit, "local", "comm_config.json")
    with open(path, "w") as f:
        json.dump(settings, f, indent=2)
    os.chmod(path, 0o644)


def run_config(n_sites: int, config: str, rounds: int, model_path: str, work: str) -> dict:
    from fl_deploy import make_job

    flags, env, _ = CONFIGS[config]
    env, server_env = process_env(env)
    sites = [f"site-{i + 1}" for i in range(n_sites)]
    os.makedirs(work, exist_ok=True)
    fed = local_federation.ProcessFederation(work, sites, name="bench", scheme=CONFIG_SCHEME.get(config))
    fed.server_env = server_env
    for kit in fed.kits.values() if config in COMM_CONFIGS else ():
        write_comm_config(kit, COMM_CONFIGS[config])
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the participants inherit it
    try:
        fed.start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    sampler = None
    try:
        fed.wait_for_sites(timeout=300)
        job = os.path.join(work, "job")
        job_flags = ["--out", job, "--sites", ",".join(sites), "--rounds", str(rounds), "--model", model_path,
                     "--dataset", "unused", "--exchange_only", "--round_timeout", "0"]
        assert make_job.main(job_flags + flags) == 0
        sampler = TreeSampler(fed.procs)
        sampler.start()
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.nvflare("job", "wait", job_id, "--timeout", "3600", timeout=3700)
        status = wait_finished(lambda: fed.nvflare("job", "meta", job_id)["data"]["status"])
        peaks = sampler.stop()
        result = fed.nvflare("job", "download", job_id, "-o", os.path.join(work, "dl"))["data"]["download_path"]
        with open(os.path.join(result, "workspace", "log.txt")) as f:
            log = f.read()
        stamps = local_federation.round_start_times(log)
        site_logs = [fed.site_job_log(s, job_id) for s in sites]
        per_site = [streamed_bytes(text) for text in site_logs] if "tensor" in flags else []
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        fed.stop()
    round_times = [b - a for a, b in zip(stamps, stamps[1:])]
    peaks["server"] = peaks.pop("localhost")
    sampler.series["server"] = sampler.series.pop("localhost")
    return {"status": status, "round_times": round_times, "peaks": peaks, "streamed": per_site,
            "round_cpu": cpu_per_round(sampler.cpu_series, stamps), "trace": sampler.series, "stamps": stamps,
            "stages": round_stats.round_columns(sampler.counter_series, stamps, log, site_logs)}


# Raw TCP between two containers of the stack (no TLS): the receiver times from its first byte to EOF.
TCP_RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); n, t0 = 0, None
while True:
    b = c.recv(4 << 20)
    if not b:
        break
    t0 = t0 or time.perf_counter(); n += len(b)
print(n / (time.perf_counter() - t0), flush=True)
"""
TCP_SENDER = """
import os, socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); p = os.urandom(4 << 20)
for _ in range(int(sys.argv[3]) // len(p)):
    c.sendall(p)
c.close()
"""


def write_bench_project(path: str, sites: list, port: int, scheme: str = None):
    """The copy's project.yml with these sites and port; server, admin and builders as the project has them
    (scheme, if given, in place of the project's)."""
    import yaml

    project = dict(load_project(path).raw)
    project["builders"] = local_federation.project_builders(path, scheme=scheme)
    others = [p for p in project["participants"] if p["type"] != "client"]
    for p in others:
        if p["type"] == "server":
            p["fed_learn_port"] = port
    clients = [{"name": s, "type": "client", "org": f"org_{s.replace('-', '_')}"} for s in sites]
    project["participants"] = others[:1] + clients + others[1:]
    with open(path, "w") as f:
        yaml.safe_dump(project, f, sort_keys=False)


def run_config_compose(n_sites: int, config: str, rounds: int, model_path: str, work: str, image: str,
                       base_image: str = None) -> dict:
    """run_config on the real deployment: an isolated copy of the project, its own compose project and volumes."""
    from fl_deploy.harness import compose_stack

    flags, extra_env, _ = CONFIGS[config]
    sites = [f"site-{i + 1}" for i in range(n_sites)]
    compose_stack.copy_project(work)
    write_bench_project(os.path.join(work, "project.yml"), sites, local_federation.free_port(),
                        scheme=CONFIG_SCHEME.get(config))
    shutil.copytree(model_path, os.path.join(work, "assets", "bench-model"))
    for dirpath, _, files in os.walk(os.path.join(work, "assets")):  # save_pretrained may write 0600 files:
        os.chmod(dirpath, 0o755)                                      # the containers' user must read them
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    env = compose_stack.checkout_env(work, dict(
        os.environ, FL_PROJECT_NAME=f"bench-{os.getpid()}-{n_sites}-{config}", FL_IMAGE=image,
        FL_SERVER_BIND="127.0.0.1", COMPOSE_FILE="compose.yaml:compose.cpu.yaml", HF_HUB_OFFLINE="1",
        FL_SITE_SHM_SIZE="256m", **extra_env))  # extra_env reaches the containers through services.yaml
    if base_image:
        env["FL_BASE_IMAGE"] = base_image

    def run(cmd, timeout=900, check=True):
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} ...: {(r.stderr or r.stdout)[-1500:]}")
        return r

    def nvflare(*args, timeout=300, check=True):
        out = run(["docker", "compose", "exec", "-T", "admin", "nvflare", "--format", "json", *args,
                   "--startup-kit", ADMIN_KIT], timeout=timeout, check=check).stdout
        return json.loads(out.strip().splitlines()[-1])

    run([sys.executable, "scripts/provision.py"])
    for name in os.listdir(os.path.join(work, "workspace", "kits")) if config in COMM_CONFIGS else ():
        write_comm_config(os.path.join(work, "workspace", "kits", name), COMM_CONFIGS[config])
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        print(f"  building {image} (once) ...", flush=True)
        run(["docker", "compose", "build", "server"], timeout=3600)
    sampler = None
    try:
        run(["docker", "compose", "up", "-d", "--no-build", "--wait"])
        receiver = subprocess.Popen(["docker", "compose", "exec", "-T", "server", "python3", "-c", TCP_RECEIVER,
                                     "9999"], cwd=work, env=env, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "listening"
        run(["docker", "compose", "exec", "-T", "site-1", "python3", "-c", TCP_SENDER, "fl-server", "9999",
             str(2 * GIB)])
        tcp = float(receiver.communicate(timeout=120)[0].strip().splitlines()[-1])
        cids = {svc: run(["docker", "compose", "ps", "-q", "--no-trunc", svc]).stdout.strip()
                for svc in ["server", *sites]}
        run(["docker", "compose", "exec", "-T", "admin", "python3", "/src/scripts/make_job.py", "--out",
             "/home/fl/jobs/bench", "--project", "/src/project.yml", "--sites", ",".join(sites), "--rounds",
             str(rounds), "--model", "/assets/bench-model", "--dataset", "unused", "--exchange_only",
             "--round_timeout", "0", *flags])
        sampler = CgroupSampler(cids)
        sampler.start()
        job_id = nvflare("job", "submit", "-j", "/home/fl/jobs/bench")["data"]["job_id"]
        nvflare("job", "wait", job_id, "--timeout", "3600", timeout=3700, check=False)  # status comes next
        status = wait_finished(lambda: nvflare("job", "meta", job_id)["data"]["status"])
        peaks = sampler.stop()
        result = nvflare("job", "download", job_id, "-o", "/home/fl/dl")["data"]["download_path"]
        log = run(["docker", "compose", "exec", "-T", "admin", "cat", f"{result}/workspace/log.txt"]).stdout
        if status != "FINISHED:COMPLETED":
            errors = run(["docker", "compose", "exec", "-T", "admin", "python3", "-m", "fl_deploy.admin.job_errors", job_id,
                          "--startup-kit", ADMIN_KIT], check=False)
            print(f"  job {job_id} {status}:\n    " + "\n    ".join(
                [ln for ln in log.splitlines() if "ERROR" in ln][-5:] + (errors.stdout or "").splitlines()[-10:]),
                flush=True)
        site_logs = [run(["docker", "compose", "exec", "-T", s, "cat", f"/workspace/{job_id}/log.txt"],
                         check=False).stdout for s in sites]
        per_site = [streamed_bytes(text) for text in site_logs] if "tensor" in flags else []
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], check=False)
    stamps = local_federation.round_start_times(log)
    return {"status": status, "round_times": [b - a for a, b in zip(stamps, stamps[1:])], "peaks": peaks,
            "streamed": per_site, "tcp": tcp, "round_cpu": cpu_per_round(sampler.cpu_series, stamps),
            "trace": sampler.series, "stamps": stamps,
            "stages": round_stats.round_columns(sampler.counter_series, stamps, log, site_logs)}


def main(argv=None) -> int:
    listing = "\n".join(f"  {name:<20} {what}" for name, (_, _, what) in CONFIGS.items())
    p = argparse.ArgumentParser(description=__doc__ + "\nConfigurations (--configs):\n" + listing,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", default="2", help="comma-separated site counts, e.g. 2,4,8")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated, from: {', '.join(CONFIGS)} (default {DEFAULT_CONFIGS})")
    p.add_argument("--rounds", type=int, default=2, help="rounds per configuration (the first one is reported too)")
    p.add_argument("--model", default="gpt2-124m", metavar="SIZES",
                   help=f"comma-separated, from: {', '.join(MODELS)}; the gpt2-* are GPT-2's architectures with "
                        f"random weights (gpt2-774m is gpt2-large), tiny the test model (default gpt2-124m)")
    p.add_argument("--project", default="6,8", metavar="SITES",
                   help="with two or more --sites counts: project each configuration's server and site peaks to "
                        "gpt2-large at these site counts, from the measured slopes ('' = no projection)")
    p.add_argument("--deployment", choices=["processes", "compose"], default="processes",
                   help="processes: kits as local processes; compose: the real containers (Docker)")
    p.add_argument("--image", default=f"{IMAGE_REPO}:bench", help="compose: image tag to run (built once if missing)")
    p.add_argument("--base-image", default=os.environ.get("FL_BASE_IMAGE"),
                   help="compose: base image for that build (default: the Dockerfile's, or $FL_BASE_IMAGE)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = p.parse_args(argv)
    try:
        counts = [int(x) for x in args.sites.split(",")]
    except ValueError:
        p.error("--sites takes integers like 2,4,8")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        p.error(f"unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    if any(c < 1 for c in counts) or args.rounds < 1:
        p.error("site counts and --rounds must be at least 1")
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        p.error(f"unknown model size(s) in --model {args.model!r}: choose from {', '.join(MODELS)}")

    if args.deployment == "compose":
        from fl_deploy import host

        try:
            host.check_docker()
        except host.HostError as e:
            p.error(f"--deployment compose: {e}")

        def runner(n, config, rounds, model, work):
            return run_config_compose(n, config, rounds, model, work, args.image, args.base_image)
    else:
        runner = run_config

    os.makedirs(args.out, exist_ok=True)
    work_root = tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    path_name = "compose bridge" if args.deployment == "compose" else "loopback"
    tcp = raw_tcp_throughput()
    print(f"raw loopback TCP: {tcp / 1e9:.2f} GB/s"
          + (" (the compose bridge is measured in each stack)" if args.deployment == "compose" else ""), flush=True)

    rows, model_sizes = [], {}
    for model in models:
        model_path, model_bytes = make_model(model, os.path.join(work_root, "assets"))
        model_sizes[model] = model_bytes
        print(f"model: {model}, {model_bytes / 1e6:.1f} MB as exchanged", flush=True)
        for n in counts:
            for config in configs:
                print(f"running {model}, {n} sites, {config} ...", flush=True)
                r = runner(n, config, args.rounds, model_path, os.path.join(work_root, f"{model}-n{n}-{config}"))
                rows.append(result_row(model, model_bytes, n, config, r, r.get("tcp", tcp)))
                print("  " + json.dumps(rows[-1]), flush=True)
                write_csv(os.path.join(args.out, "benchmark.csv"), rows)  # so far: a run cut short keeps its rows
                write_trace(os.path.join(args.out, f"trace-{model}-{n}-{config}.csv"), r)
        shutil.rmtree(model_path, ignore_errors=True)  # GBs for the larger sizes

    csv_path = os.path.join(args.out, "benchmark.csv")
    cols = ["model", "sites", "config", "round_s_median", "round_over_floor", "cpu_busy", "effective_MB_s",
            "server_peak_GiB", "server_peak_over_model", "site_peak_GiB_max", "site_peak_over_model",
            "bytes_down_per_site", "bytes_up_per_site", "status", *round_stats.STAGE_COLUMNS]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r.get(c)) for c in cols) + " |" for r in rows]
    md += ["", *round_stats.scaling_lines(rows)]
    tcps = sorted({r["raw_tcp_GB_s"] for r in rows})
    deployed = ("containers (compose, CPU overlay), memory per container from its cgroup"
                if args.deployment == "compose" else "processes from provisioned kits, memory per process tree")
    sizes = ", ".join(f"{m} {b / 1e6:.1f} MB" for m, b in model_sizes.items())
    header = (f"model {sizes} exchanged, raw {path_name} TCP "
              f"{tcps[0]:.2f}{f'-{tcps[-1]:.2f}' if len(tcps) > 1 else ''} GB/s, {os.cpu_count()} CPUs, "
              f"{args.rounds} rounds, {deployed} (mTLS)")
    with open(os.path.join(args.out, "benchmark.md"), "w") as f:
        f.write(header + "\n\n" + "\n".join(md) + "\n")
    plot(rows, os.path.join(args.out, "benchmark.png"), header)
    print("\n" + header + "\n\n" + "\n".join(md))
    targets = [int(x) for x in args.project.split(",") if x.strip()]
    gpt2 = [m for m in models if m != "tiny"]
    base = None
    if targets and len(set(counts)) >= 2 and gpt2:
        base = runtime_base(configs[0], work_root, runner)
        lines = projection([r for r in rows if r["model"] == gpt2[0]], model_sizes[gpt2[0]], base, targets)
        with open(os.path.join(args.out, "projection.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
    if len(gpt2) >= 2:
        base = base or runtime_base(configs[0], work_root, runner)
        lines = size_projection([r for r in rows if r["model"] in gpt2], base)
        with open(os.path.join(args.out, "projection-sizes.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
    print(f"\nwritten: {csv_path}, benchmark.md" + (", benchmark.png" if os.path.exists(
        os.path.join(args.out, "benchmark.png")) else ""))
    failed = [f"{r['model']} {r['sites']} sites {r['config']}: {r['status']}" for r in rows
              if r["status"] != "FINISHED:COMPLETED"]
    if failed:  # their rows carry no round time: the errors are printed above each of them
        print("error: runs that did not complete: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def write_csv(path: str, rows: list):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def result_row(model: str, model_bytes: int, n: int, config: str, r: dict, tcp: float) -> dict:
    """One row of the table from one configuration's run: bytes, round time against the floor, CPU, peaks."""
    sent = model_bytes // 2 if "bfloat16" in CONFIGS[config][0] else model_bytes
    down = statistics.mean([s["down"] for s in r["streamed"] if s["down"]] or [sent])
    up = statistics.mean([s["up"] for s in r["streamed"] if s["up"]] or [sent])
    floor = n * (down + up) / tcp
    round_s = statistics.median(r["round_times"]) if r["round_times"] else float("nan")
    server = r["peaks"].get("server", 0)
    cpus = [c for c in r.get("round_cpu", []) if c is not None]
    cpu_s = statistics.median(cpus) if cpus else float("nan")
    site_peaks = [v for k, v in r["peaks"].items() if k != "server"]
    return {
        "model": model, "sites": n, "config": config, "status": r["status"],
        "round_s_median": round(round_s, 2),
        "round_s_all": " ".join(f"{t:.1f}" for t in r["round_times"]),
        "bytes_down_per_site": int(down), "bytes_up_per_site": int(up),
        "bytes_source": "streamer logs" if r["streamed"] else "state_dict size",
        "effective_MB_s": round(n * (down + up) / round_s / 1e6, 1),
        "raw_tcp_GB_s": round(tcp / 1e9, 2),
        "floor_s": round(floor, 2),
        "round_over_floor": round(round_s / floor, 1),
        "cpu_s_per_round": round(cpu_s, 1),
        # Share of the machine's cores the participants kept busy during a round: near 1, the round is bound by
        # CPU (TLS, serialization, copies), not by the wire.
        "cpu_busy": round(cpu_s / (round_s * os.cpu_count()), 2),
        "server_peak_GiB": round(server / GIB, 2),
        "server_peak_over_model": round(server / model_bytes, 1),
        "site_peak_GiB_max": round(max(site_peaks) / GIB, 2) if site_peaks else 0,
        "site_peak_GiB_mean": round(statistics.mean(site_peaks) / GIB, 2) if site_peaks else 0,
        "site_peak_over_model": round(max(site_peaks) / model_bytes, 1) if site_peaks else 0,
        "model_MB": round(model_bytes / 1e6, 1),
        **r.get("stages", {}),  # page faults, CPU s per participant, phase times: medians after round 1
    }


def write_trace(path: str, r: dict):
    """Each participant's sampled memory over the run, in seconds from the first round's start (negative: the
    job starting), with the round starts as 'round' rows: where in a round the peak falls."""
    t0 = r["stamps"][0] if r["stamps"] else 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "participant", "resident_bytes"])
        w.writerows([round(t - t0, 2), "round", i] for i, t in enumerate(r["stamps"]))
        for name, series in r["trace"].items():
            w.writerows([round(t - t0, 2), name, v] for t, v in series)


def large_model_bytes() -> int:
    """gpt2-large's weights as exchanged (tied lm_head once), counted on the meta device: nothing allocated."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(**make_tiny_assets.GPT2_SIZES[LARGE]))
    # parameters() yields a shared (tied) parameter once; meta tensors have no storage to compare.
    return sum(t.numel() * t.element_size() for t in model.parameters())


def runtime_base(config: str, work_root: str, runner=run_config) -> dict:
    """Peaks with a negligible model (the tiny one, 2 sites): what the runtime costs without any weights."""
    path, _ = make_model("tiny", os.path.join(work_root, "assets-tiny"))
    r = runner(2, config, 2, path, os.path.join(work_root, "base"))
    sites = [v for k, v in r["peaks"].items() if k != "server"]
    return {"server": r["peaks"]["server"], "site": max(sites)}


def projection(rows: list, model_bytes: int, base: dict, targets: list) -> list:
    """peak(N sites, M model bytes) = base + M x (a + b N), a and b fitted per configuration on the measured site
    counts; then evaluated for gpt2-large. Exchange only: training memory comes on top at the sites."""
    large = large_model_bytes()
    out = [f"Projection to gpt2-large ({large / 1e9:.2f} GB exchanged), exchange only, from the measured slopes "
           f"(runtime without weights: server {base['server'] / GIB:.2f} GiB, site {base['site'] / GIB:.2f} GiB):",
           "", "| config | sites | server model copies (a + b·N) | server peak (GiB) | site peak (GiB) |",
           "|---|---|---|---|---|"]
    for config in dict.fromkeys(r["config"] for r in rows):
        pts = sorted((r["sites"], r["server_peak_GiB"] * GIB, r["site_peak_GiB_max"] * GIB)
                     for r in rows if r["config"] == config)
        if len({n for n, _, _ in pts}) < 2:
            continue
        ns = [n for n, _, _ in pts]
        copies = [(p - base["server"]) / model_bytes for _, p, _ in pts]
        n_mean, c_mean = statistics.mean(ns), statistics.mean(copies)
        b = sum((n - n_mean) * (c - c_mean) for n, c in zip(ns, copies)) / sum((n - n_mean) ** 2 for n in ns)
        a = c_mean - b * n_mean
        site_copies = max((s - base["site"]) / model_bytes for _, _, s in pts)
        for n in targets:
            out.append(f"| {config} | {n} | {a:.1f} + {b:.2f}·{n} = {a + b * n:.1f} | "
                       f"{(base['server'] + large * (a + b * n)) / GIB:.1f} | "
                       f"{(base['site'] + large * site_copies) / GIB:.1f} |")
    return out


def fit_sizes(points: list) -> tuple:
    """Least-squares line peak = intercept + copies x model bytes through (model bytes, peak bytes) points of two
    or more sizes: (intercept bytes, copies)."""
    ms = [m for m, _ in points]
    m_mean, p_mean = statistics.mean(ms), statistics.mean(p for _, p in points)
    copies = (sum((m - m_mean) * (p - p_mean) for m, p in points) / sum((m - m_mean) ** 2 for m in ms))
    return p_mean - copies * m_mean, copies


def size_projection(rows: list, base: dict) -> list:
    """gpt2-large's peaks at each measured site count, projected two ways from the rows of two or more GPT-2
    sizes (model_MB, server / site peaks): from the smallest size alone, as earlier runs did (base + M x the copies
    measured at that size, base = the runtime without weights, measured on the tiny model), and from a line through
    every size below gpt2-large (fit_sizes). A measured gpt2-large row, if any, is shown beside both."""
    large = large_model_bytes()
    out = [f"gpt2-large ({large / 1e9:.2f} GB exchanged) projected from the measured sizes, exchange only "
           f"(runtime without weights, tiny model: server {base['server'] / GIB:.2f} GiB, site "
           f"{base['site'] / GIB:.2f} GiB):", "",
           "| config | sites | peak | from the smallest size alone (GiB) | line through the sizes: intercept + copies "
           "x M (GiB) | measured gpt2-large (GiB) |", "|---|---|---|---|---|---|"]
    for config in dict.fromkeys(r["config"] for r in rows):
        for n in sorted({r["sites"] for r in rows if r["config"] == config}):
            at = [r for r in rows if r["config"] == config and r["sites"] == n
                  and r["status"] == "FINISHED:COMPLETED"]
            fit = sorted((r for r in at if r["model"] != LARGE), key=lambda r: r["model_MB"])
            measured = [r for r in at if r["model"] == LARGE]
            if len(fit) < 2:
                continue
            for peak, key in (("server", "server_peak_GiB"), ("site", "site_peak_GiB_max")):
                pts = [(r["model_MB"] * 1e6, r[key] * GIB) for r in fit]
                alone = base[peak] + large * (pts[0][1] - base[peak]) / pts[0][0]
                intercept, copies = fit_sizes(pts)
                seen = f"{measured[0][key]:.2f}" if measured else "not measured"
                out.append(f"| {config} | {n} | {peak} | {alone / GIB:.2f} ({fit[0]['model']}: "
                           f"{(pts[0][1] - base[peak]) / pts[0][0]:.2f} copies) | {intercept / GIB:.2f} + "
                           f"{copies:.2f} x {large / 1e9:.2f} GB = {(intercept + copies * large) / GIB:.2f} | {seen} |")
    return out


def plot(rows, path, title):
    try:
        import matplotlib
    except ImportError:  # a bare Python with torch and transformers (benchmarks/upstream_scenario.py): no plot
        print("matplotlib is not installed: no benchmark.png")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    several = len({r["model"] for r in rows}) > 1
    for series in dict.fromkeys((r["model"], r["config"]) for r in rows):
        rs = [r for r in rows if (r["model"], r["config"]) == series]
        label = f"{series[1]}, {series[0]}" if several else series[1]
        a.plot([r["sites"] for r in rs], [r["round_s_median"] for r in rs], "o-", label=label)
        b.plot([r["sites"] for r in rs], [r["server_peak_GiB"] for r in rs], "o-", label=label)
    a.set(xlabel="sites", ylabel="round time (s, median)", title="exchange-only round time")
    b.set(xlabel="sites", ylabel="server peak RSS (GiB)", title="server memory")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
