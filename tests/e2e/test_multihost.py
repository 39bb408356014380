"""End to end, multi-host on one machine: the server + admin from the main compose file on one "host", each
site from its exported bundle on its own "host" -- a separate compose project on its own network, with only
its kit, the image, the bundle's compose files and .env -- reaching the server only through the port the
server publishes on the Docker host (FL_SERVER_ADDRESS=host-gateway, mapped to the server's certificate name
by extra_hosts). Each site host has its own dataset (SITE_DATA: its own label mix and size, made with
make_tiny_assets.py --site-data) in a folder its bundle's .env names; a tiny 2-round job with site-local data
(FL_DATA_SOURCE=site) is submitted through the admin; then everything is torn down.

Where the server's port is published: a port published on 127.0.0.1 is not reachable from another container
network (Docker DNATs only traffic addressed to the bound address; containers reach the host through its
bridge gateway, not loopback). So the server publishes on the address `host-gateway` resolves to (the docker0
gateway, found with a probe container): reachable from every container network of this engine and from this
host, but not from other machines, unlike 0.0.0.0, which real multi-host deployments use (FL_SERVER_BIND).

Needs a Docker engine with Compose v2. Image: FL_TEST_IMAGE (an existing image of this project, built for
uid 10001) or one built here from the wheelhouse on FL_TEST_BASE_IMAGE, as test_compose_demo.py does.
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from fl_deploy.harness import local_federation
from fl_deploy.harness.compose_stack import tiny_job

ROOT = local_federation.ROOT

SITES = ["site-1", "site-2"]
SERVER_NAME = "fl-hub"  # renamed in the copy: the name must travel from project.yml into the bundles
ROUNDS = 2
PREFIX = f"mh-{os.getpid()}"
SERVER_PROJECT = f"{PREFIX}-server"
SITE_PROJECTS = {s: f"{PREFIX}-{s}" for s in SITES}
REGISTERED = "Successfully registered client"
JOB_ENV = dict(tiny_job(ROUNDS), FL_JOB_TIMEOUT="1500", FL_DATA_SOURCE="site")
# Each site host's own data: different label mixes, sizes and seeds (so different rows and held-out row counts).
SITE_DATA = {"site-1": ["--label-mix", "0.9", "--seed", "11", "--train", "120", "--test", "30"],
             "site-2": ["--label-mix", "0.2", "--seed", "12", "--train", "200", "--test", "12"]}


import docker_env  # noqa: E402
from fl_deploy.harness.compose_stack import checkout_env, copy_project, edit_project  # noqa: E402
from fl_deploy import IMAGE_REPO  # noqa: E402
from fl_deploy.host import ADMIN_KIT  # noqa: E402
from stack_harness import base_image_env, compose_resources  # noqa: E402

docker_env.require_docker()


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def must(cmd, **kw) -> subprocess.CompletedProcess:
    r = run(cmd, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{(r.stdout or '')[-3000:]}\n{(r.stderr or '')[-3000:]}"
    return r


def site_env() -> dict:
    """What a site operator's shell has: nothing of ours, so the bundle's .env alone decides."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FL_", "COMPOSE_", "HF_")) and k not in ("TOKENIZERS_PARALLELISM",)}


def private_data(host: str, site: str) -> str:
    """The folder of a site's own data on its host: a name that must never show up outside that host."""
    return os.path.join(host, f"private-data-of-{site}-{os.getpid()}")


def set_env_lines(path: str, values: dict):
    """Edit a bundle's .env as an operator would: replace KEY=... lines."""
    with open(path) as f:
        text = f.read()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
        assert n == 1, f"{key} not in {path}"
    with open(path, "w") as f:
        f.write(text)


def container(project: str, service: str) -> dict:
    cid = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
               "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()
    assert len(cid) == 1, f"{project}/{service}: {cid}"
    return json.loads(must(["docker", "inspect", cid[0]]).stdout)[0]


def workspace_files(work: str, env: dict, service: str) -> dict:
    """{path: bytes} of the files in a service's /workspace, read through `docker compose exec` (tar)."""
    r = subprocess.run(["docker", "compose", "exec", "-T", service, "tar", "-C", "/workspace", "-cf", "-", "."],
                       cwd=work, env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def host_gateway_ip(image: str) -> str:
    """The address `host-gateway` resolves to in a container (the docker0 gateway)."""
    r = must(["docker", "run", "--rm", "--add-host", "mh-probe:host-gateway", "--entrypoint", "getent", image,
              "hosts", "mh-probe"])
    return r.stdout.split()[0]


def wait_registered(hosts: dict, t_up: dict, timeout: float = 300) -> dict:
    """Seconds from each site's `up` until its log says it registered; then its healthcheck must say healthy."""
    deadline = time.monotonic() + timeout
    registered, healthy = {}, {}
    while time.monotonic() < deadline and len(healthy) < len(hosts):
        for site in hosts:
            info = container(SITE_PROJECTS[site], "site")
            assert info["State"]["Status"] in ("running", "created"), \
                f"{site} is {info['State']['Status']}: " + run(["docker", "logs", "--tail", "60", info["Id"]]).stderr
            if site not in registered and run(["docker", "exec", info["Id"], "grep", "-qs", REGISTERED,
                                               "/workspace/log.txt"]).returncode == 0:
                registered[site] = time.monotonic() - t_up[site]
            if info["State"].get("Health", {}).get("Status") == "healthy":
                healthy.setdefault(site, time.monotonic() - t_up[site])
        time.sleep(1)
    assert len(healthy) == len(hosts), f"registered {registered}, healthy {healthy} after {timeout}s"
    return {"registered_s": registered, "healthy_s": healthy}


@pytest.fixture(scope="module")
def multihost(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("multihost"))
    given_image = os.environ.get("FL_TEST_IMAGE")
    image = given_image or f"{IMAGE_REPO}:{PREFIX}"
    copy_project(work, with_wheels=not given_image)

    # The server "host": a project.yml with a free port and another server name; kits and compose follow.
    port = edit_project(work, server_name=SERVER_NAME)
    must([sys.executable, "scripts/provision.py"], cwd=work, env=checkout_env(work))
    must([sys.executable, "scripts/make_tiny_assets.py", "--out", "assets/tiny"], cwd=work, env=checkout_env(work))

    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_"))}
    server_env.update(JOB_ENV, FL_PROJECT_NAME=SERVER_PROJECT, FL_IMAGE=image,
                      COMPOSE_FILE="compose.yaml:compose.cpu.yaml", **base_image_env())
    if os.geteuid() != 0:
        server_env["FL_UID"] = str(os.getuid())  # as demo.sh: kits provisioned by a user stay that user's
    hosts = {s: os.path.join(work, "hosts", s) for s in SITES}
    state = {"work": work, "image": image, "port": port, "server_env": server_env, "hosts": hosts}
    try:
        if not given_image:
            must(["docker", "compose", "build", "server"], cwd=work, env=server_env, timeout=1800)
        gateway = host_gateway_ip(image)
        server_env["FL_SERVER_BIND"] = gateway
        state["gateway"] = gateway
        must(["docker", "compose", "up", "-d", "--no-build", "--wait", "server", "admin"], cwd=work,
             env=server_env, timeout=300)

        # Export the bundles (timed), ship each site its archive only, unpack it on its "host".
        t0 = time.monotonic()
        export = must([sys.executable, "scripts/export_bundles.py", "--out", "bundles", "--image", image,
                       "--archive"], cwd=work, env=checkout_env(work))
        state["export_s"] = time.monotonic() - t0
        state["export_out"] = export.stdout
        for site, host in hosts.items():
            os.makedirs(host)
            must(["tar", "-xzf", os.path.join(work, "bundles", f"{site}.tar.gz"), "-C", host, "--strip-components", "1"])
            shutil.copytree(os.path.join(work, "assets", "tiny"), os.path.join(host, "assets", "tiny"))
            # The site's own data, in a folder of its host that only its .env names.
            must([sys.executable, "scripts/make_tiny_assets.py", "--site-data", private_data(host, site),
                  *SITE_DATA[site]], cwd=work, env=checkout_env(work))
            # The operator's edits: the server's address, the image, CPU, offline; a unique project name here.
            set_env_lines(os.path.join(host, ".env"), {"FL_SITE_DATA": private_data(host, site),
                "FL_SERVER_ADDRESS": "host-gateway", "FL_IMAGE": image,
                "COMPOSE_FILE": "compose.yaml:compose.cpu.yaml", "HF_HUB_OFFLINE": "1",
                "FL_SITE_SHM_SIZE": "256m", "FL_SITE_PROJECT": SITE_PROJECTS[site]})

        t_up = {}
        for site, host in hosts.items():
            t_up[site] = time.monotonic()
            must(["docker", "compose", "up", "-d"], cwd=host, env=site_env(), timeout=120)
        state.update(wait_registered(hosts, t_up))

        status = must(["docker", "compose", "exec", "-T", "admin", "nvflare", "--format", "json", "system",
                       "status", "--startup-kit", ADMIN_KIT], cwd=work, env=server_env, timeout=120)
        state["system_status"] = json.loads(status.stdout.strip().splitlines()[-1])
        # The admin bundle on a third "host": its kit, the image and an --add-host mapping, as its README says.
        admin_host = os.path.join(work, "hosts", "admin")
        os.makedirs(admin_host)
        must(["tar", "-xzf", os.path.join(work, "bundles", "admin.tar.gz"), "-C", admin_host, "--strip-components", "1"])
        remote = run(["docker", "run", "--rm", "--add-host", f"{SERVER_NAME}:host-gateway", "-v",
                      f"{admin_host}/kit:/kit:ro", "--entrypoint", "bash", image, "-c",
                      "cp -r /kit ~/kit && nvflare --format json system status --startup-kit ~/kit"], timeout=180)
        state["remote_admin_status"] = remote
        state["containers"] = {s: container(SITE_PROJECTS[s], "site") for s in SITES}
        state["server_container"] = container(SERVER_PROJECT, "server")

        t0 = time.monotonic()
        job = run([sys.executable, "scripts/submit_job.py", "--interval", "2"], cwd=work, env=server_env,
                  timeout=1800)
        state["job_s"] = time.monotonic() - t0
        state["job"] = job
        # What the server's host holds once the job is done: the job store (the job folder as submitted), the
        # server's workspace, the admin's (staging, downloads).
        state["host_files"] = {svc: workspace_files(work, server_env, svc) for svc in ("server", "admin")}
        yield state
    finally:
        for site, host in hosts.items():
            if os.path.isdir(host):
                run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], cwd=host, env=site_env())
        run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], cwd=work, env=server_env)
        if not given_image:
            run(["docker", "image", "rm", "-f", image])


def test_bundles_exported(multihost):
    work, port = multihost["work"], multihost["port"]
    for site in SITES:
        bundle = os.path.join(work, "bundles", site)
        assert sorted(os.listdir(bundle)) == [".env", "README.md", "assets", "compose.cpu.yaml", "compose.yaml",
                                              "kit", "services.yaml", "site-data"]
        with open(os.path.join(bundle, ".env")) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if line and not line.startswith("#"))
        assert env["FL_SITE"] == site and env["FL_SERVER_NAME"] == SERVER_NAME
        # FL_SERVER_ADDRESS is left for the site's operator: compose refuses to start while it is empty.
        assert env["FL_SERVER_ADDRESS"] == "" and env["FL_IMAGE"] == multihost["image"]
        assert {"FL_GPUS", "HF_HUB_OFFLINE"} <= set(env) and env["FL_SITE_DATA"] == "./site-data"
        with open(os.path.join(bundle, "README.md")) as f:
            readme = f.read()
        assert "docker load" in readme and "docker compose up -d" in readme and ".env" in readme
        # The kit travels as provisioned: same bytes, same modes (the key stays private).
        kit, src = os.path.join(bundle, "kit"), os.path.join(work, "workspace", "kits", site)
        assert run(["diff", "-r", kit, src]).returncode == 0
        assert oct(os.stat(os.path.join(kit, "startup", "client.key")).st_mode & 0o777) == "0o600"
        with open(os.path.join(kit, "startup", "fed_client.json")) as f:
            assert json.load(f)["servers"][0]["service"]["target"] == f"{SERVER_NAME}:{port}"
        assert os.path.isfile(os.path.join(work, "bundles", f"{site}.tar.gz"))
    admin = os.path.join(work, "bundles", "admin")
    assert sorted(os.listdir(admin)) == ["README.md", "kit"]
    with open(os.path.join(admin, "README.md")) as f:
        readme = f.read()
    assert "/etc/hosts" in readme and "--add-host" in readme and SERVER_NAME in readme
    assert "exported 3 bundle(s) in" in multihost["export_out"]


def test_export_rejects_bad_input(multihost, tmp_path):
    work = multihost["work"]
    cases = [
        (["--sites", "site-9"], "unknown site"),
        (["--workspace", str(tmp_path)], "provision first"),
        (["--out", "bundles"], "already exist"),
    ]
    for args, expected in cases:
        r = run([sys.executable, "scripts/export_bundles.py", *args], cwd=work, env=checkout_env(work))
        assert r.returncode == 2 and r.stderr.startswith("error:") and expected in r.stderr, (args, r.stderr)


def test_sites_registered_through_host_gateway(multihost):
    clients = {c["client_name"] for c in multihost["system_status"]["data"]["clients"]}
    assert clients == set(SITES), multihost["system_status"]
    for site, info in multihost["containers"].items():
        assert info["State"]["Health"]["Status"] == "healthy", site
        assert info["HostConfig"]["ExtraHosts"] == [f"{SERVER_NAME}:host-gateway"], site


def test_admin_bundle_reaches_server(multihost):
    remote = multihost["remote_admin_status"]
    assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-2000:]
    status = json.loads(remote.stdout.strip().splitlines()[-1])
    assert {c["client_name"] for c in status["data"]["clients"]} == set(SITES), status


def test_sites_on_their_own_networks(multihost):
    server_nets = set(multihost["server_container"]["NetworkSettings"]["Networks"])
    assert server_nets == {f"{SERVER_PROJECT}_default"}
    bound = multihost["server_container"]["HostConfig"]["PortBindings"][f"{multihost['port']}/tcp"]
    assert bound == [{"HostIp": multihost["gateway"], "HostPort": str(multihost["port"])}]
    for site, info in multihost["containers"].items():
        nets = set(info["NetworkSettings"]["Networks"])
        assert nets == {f"{SITE_PROJECTS[site]}_default"}, site
        assert not nets & server_nets, site
        assert not any(b for b in (info["HostConfig"]["PortBindings"] or {}).values()), f"{site} publishes a port"
        # The same hardening as the single-host stack.
        assert info["Config"]["User"] not in ("", "0", "root"), site
        assert info["HostConfig"]["CapDrop"] == ["ALL"], site
        assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"], site
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", site
        kit = [m for m in info["Mounts"] if m["Destination"] == "/kit"][0]
        assert kit["RW"] is False and kit["Source"] == os.path.join(multihost["hosts"][site], "kit"), site
        assert info["HostConfig"]["DeviceRequests"] in (None, []), site  # the CPU overlay reset the GPU request


def test_job_completed_with_both_sites(multihost):
    job = multihost["job"]
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "FINISHED:COMPLETED" in output, output[-6000:]
    m = re.search(r"results:\s+(\S+)", job.stdout)
    assert m, output[-3000:]
    metrics = os.path.join(multihost["work"], m.group(1), "workspace", "metrics", "round_metrics.jsonl")
    with open(metrics) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert sorted(s["name"] for s in r["sites"]) == SITES


def result_dir(multihost) -> str:
    job = multihost["job"]
    m = re.search(r"results:\s+(\S+)", job.stdout)
    assert job.returncode == 0 and m, (job.stdout + job.stderr)[-3000:]
    return os.path.join(multihost["work"], m.group(1))


def test_each_site_trained_on_its_own_data_only(multihost):
    """Each site's log gives the row counts and fingerprints of exactly the rows in its own host's folder, mounted
    read-only into that site only; the two sites' rows differ."""
    from fl_site.data import fingerprint
    from fl_site.site_data import DEFAULT_DIR, DIR_ENV, load_own_data

    result, seen = result_dir(multihost), set()
    for site in SITES:
        folder = private_data(multihost["hosts"][site], site)
        mount = [m for m in multihost["containers"][site]["Mounts"] if m["Destination"] == DEFAULT_DIR]
        assert [(m["Source"], m["RW"]) for m in mount] == [(folder, False)], site
        own = load_own_data(site, eval_samples=int(JOB_ENV["FL_EVAL_SAMPLES"]), environ={DIR_ENV: folder})
        with open(os.path.join(result, "site_logs", site, "log.txt")) as f:
            log = f.read()
        line = (f"{site}: own data, {len(own.train)} train rows (fingerprint {fingerprint(own.train)}), "
                f"{len(own.held_out)} held-out rows (fingerprint {fingerprint(own.held_out)}); data_source site")
        assert line in log, [l for l in log.splitlines() if "train rows" in l]
        seen.add(fingerprint(own.train))
    assert len(seen) == len(SITES)
    assert DEFAULT_DIR not in {m["Destination"] for m in multihost["server_container"]["Mounts"]}


def test_global_held_out_loss_is_the_mean_weighted_by_held_out_rows(multihost):
    with open(os.path.join(result_dir(multihost), "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    rows_of = {s: min(int(SITE_DATA[s][SITE_DATA[s].index("--test") + 1]), int(JOB_ENV["FL_EVAL_SAMPLES"]))
               for s in SITES}
    for rnd in range(1, ROUNDS + 1):
        sites = {r["site"]: r for r in rows if r["round"] == str(rnd) and r["site"] in SITES}
        total = next(r for r in rows if r["round"] == str(rnd) and r["site"] == "global")
        assert {s: int(float(r["held_out_rows"])) for s, r in sites.items()} == rows_of
        assert int(float(total["held_out_rows"])) == sum(rows_of.values())
        for loss in ("global_eval_loss", "eval_loss"):
            weighted = sum(rows_of[s] * float(r[loss]) for s, r in sites.items()) / sum(rows_of.values())
            assert float(total[loss]) == pytest.approx(weighted, rel=1e-9), (rnd, loss, sites, total)
        losses = [float(r["global_eval_loss"]) for r in sites.values()]
        assert losses[0] != losses[1]  # each site evaluated the same global model on rows of its own


def test_no_site_data_leaves_its_host(multihost):
    """Neither a site's data path nor any of its rows is in the job folder (the server's job store), the server's
    workspace, the admin's or the downloaded results."""
    from fl_site.data import load_text_dataset

    secrets, texts = [], set()
    for site in SITES:
        folder = private_data(multihost["hosts"][site], site)
        secrets += [folder, os.path.basename(folder)]
        ds = load_text_dataset(folder)
        texts |= set(ds["train"]["text"]) | set(ds["test"]["text"])
    result = result_dir(multihost)
    places = dict(multihost["host_files"])
    places["results"] = {}
    for root, _, files in os.walk(result):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                places["results"][os.path.relpath(os.path.join(root, name), result)] = f.read()
    assert places["server"] and places["results"]
    for where, files in places.items():
        for name, data in files.items():
            text = data.decode("utf-8", "replace")
            assert not any(s in name or s in text for s in secrets), (where, name)
            leaked = [t for t in texts if t in text]
            assert not leaked, (where, name, leaked[:2])


def test_teardown_leaves_nothing(multihost, figures):
    for site, host in multihost["hosts"].items():
        down = run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], cwd=host, env=site_env())
        assert down.returncode == 0, down.stderr
    down = run(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], cwd=multihost["work"],
               env=multihost["server_env"])
    assert down.returncode == 0, down.stderr
    for project in [SERVER_PROJECT, *SITE_PROJECTS.values()]:
        assert compose_resources(project) == {"containers": [], "networks": [], "volumes": []}, project
    reg = ", ".join(f"{s} {multihost['registered_s'].get(s, float('nan')):.1f}s (healthy {multihost['healthy_s'][s]:.1f}s)"
                    for s in SITES)
    figures(f"multihost: export bundles {multihost['export_s']:.2f}s (incl. interpreter start); "
          f"site up -> registered: {reg}; job {multihost['job_s']:.0f}s; server published on "
          f"{multihost['gateway']}:{multihost['port']}")
