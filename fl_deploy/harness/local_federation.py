"""A provisioned NVFlare federation run from its startup kits as local processes (no containers).

The integration tests and benchmarks/exchange.py use it; the compose tests drive the same kits through
containers instead. Each participant runs its kit's own sub_start.sh --once in a private workspace.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from fl_deploy import ROOT
from fl_deploy.project import connection_builder, load_project
from fl_deploy.provision import provision

VENV_BIN = os.path.dirname(sys.executable)
# The nvflare CLI: the venv's console script, else the module (packages installed into a target dir have their
# scripts elsewhere: benchmarks/upstream_scenario.py)
NVFLARE_CLI = ([os.path.join(VENV_BIN, "nvflare")] if os.path.isfile(os.path.join(VENV_BIN, "nvflare"))
               else [sys.executable, "-m", "nvflare.cli"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_builders(project_path: str = os.path.join(ROOT, "project.yml"), scheme: str = None) -> list:
    """project.yml's builders; scheme, if given, replaces the connection scheme the kits get (http, grpc, tcp)."""
    import copy

    raw = copy.deepcopy(load_project(project_path).raw)
    if scheme:
        connection_builder(raw).setdefault("args", {})["scheme"] = scheme
    return raw["builders"]


def write_project(path: str, port: int, sites: list, name: str = "itest", extra_admins: tuple = (),
                  scheme: str = None, site_props: dict = None):
    """A project.yml for a federation on this host; ``site_props`` adds NVFlare participant keys per site (e.g.
    ``{"site-2": {"connect_to": {"host": "localhost", "port": 9000}}}``: that site's kit dials another port)."""
    import yaml

    participants = [{"name": "localhost", "type": "server", "org": "test", "fed_learn_port": port}]
    participants += [{"name": s, "type": "client", "org": "test", **(site_props or {}).get(s, {})} for s in sites]
    participants += [{"name": "admin@test.org", "type": "admin", "org": "test", "role": "project_admin"}]
    participants += [{"name": n, "type": "admin", "org": "test", "role": r} for n, r in extra_admins]
    project = {
        "api_version": 3,
        "name": name,
        "description": "integration test",
        "participants": participants,
        # the project's own builders: the kits get the scheme and files the deployment gets
        "builders": project_builders(scheme=scheme),
    }
    with open(path, "w") as f:
        yaml.safe_dump(project, f, sort_keys=False)


class ProcessFederation:
    """Server and sites started with their kits' own sub_start.sh, each in a private workspace."""

    def __init__(self, root: str, sites: list, port: int = 0, name: str = "itest", extra_admins: tuple = (),
                 scheme: str = None, site_props: dict = None):
        self.root = root
        self.sites = sites
        self.port = port or free_port()
        project = os.path.join(root, "project.yml")
        write_project(project, self.port, sites, name=name, extra_admins=extra_admins, scheme=scheme,
                      site_props=site_props)
        self.project = load_project(project)
        self.kits = provision(self.project, os.path.join(root, "ws"), storage_root=os.path.join(root, "server-store"),
                              force=False, service_uid=0)
        self.admin_kit = self.kits["admin@test.org"]
        self.procs = {}
        self.server_env = {}  # extra environment for the server's processes only

    def workspace(self, name: str) -> str:
        return os.path.join(self.root, "run", name)

    def start(self):
        for name in ["localhost", *self.sites]:
            self.restart(name)

    def restart(self, name: str):
        """Start (again) one participant from its kit, keeping its workspace."""
        env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
        os.makedirs(self.workspace(name), exist_ok=True)
        log = open(os.path.join(self.root, f"{name}.out"), "a")
        self.procs[name] = subprocess.Popen(
            ["bash", os.path.join(self.kits[name], "startup", "sub_start.sh"), "--once"],
            env={**env, **(self.server_env if name == "localhost" else {}), "NVFL_WORKSPACE": self.workspace(name)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self):
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def nvflare(self, *args, timeout=120, admin=None) -> dict:
        kit = self.kits[admin] if admin else self.admin_kit
        cmd = [*NVFLARE_CLI, "--format", "json", *args, "--startup-kit", kit]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        lines = run.stdout.strip().splitlines()
        assert lines, f"nvflare {args} printed nothing: {run.stderr[-2000:]}"
        return json.loads(lines[-1])

    def wait_for_sites(self, timeout=120):
        deadline = time.monotonic() + timeout
        registered = set()
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} exited early; see {self.root}/{name}.out"
            try:
                status = self.nvflare("system", "status", timeout=30)
                registered = {c["client_name"] for c in status.get("data", {}).get("clients", [])}
            except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired):
                pass
            if registered >= set(self.sites):
                return time.monotonic() - (deadline - timeout)
            time.sleep(2)
        raise AssertionError(f"sites registered after {timeout}s: {sorted(registered)}, expected {self.sites}")

    def __enter__(self):
        """Started, with every site registered; stopped on exit."""
        self.start()
        try:
            self.wait_for_sites()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def site_job_log(self, site: str, job_id: str) -> str:
        with open(os.path.join(self.workspace(site), job_id, "log.txt")) as f:
            return f.read()

    def wait_for_site_log(self, site: str, job_id: str, text: str, timeout: float = 300):
        """Until the site's job log holds ``text`` (e.g. "site-2: round 1 received": round 2 reached it)."""
        path = os.path.join(self.workspace(site), job_id, "log.txt")
        deadline = time.monotonic() + timeout
        while text not in (open(path).read() if os.path.exists(path) else ""):
            assert time.monotonic() < deadline, f"no {text!r} in {site}'s job log after {timeout:.0f}s"
            time.sleep(0.1)


def round_start_times(server_log: str) -> list:
    """Timestamps (s) of 'Round N started' and of 'Finished FedAvg' in a server job log."""
    from datetime import datetime

    stamps, last = [], None
    for line in server_log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
        if m:
            last = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        elif re.search(r"Round \d+ started|Finished FedAvg", line) and last is not None:
            stamps.append(last)  # a banner continues the message whose header line carried the time
    return stamps
