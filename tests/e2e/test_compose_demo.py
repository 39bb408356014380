"""End to end, as a user: the README's demo command (scripts/demo.sh --cpu --tiny) on a real Docker engine, in a
clean copy of the project, then checks of the downloaded result, then a teardown that must leave nothing behind.

Needs a Docker engine with Compose v2. The image's base comes from FL_TEST_BASE_IMAGE (CI builds one locally,
since no registry is reachable there); packages come from the wheelhouse (docker/wheels), never from a network.
"""

import json
import os
import re
import subprocess
import time

import pytest

from fl_deploy import local_federation as fl_system

ROOT = fl_system.ROOT
SITES = ["site-1", "site-2"]
ROUNDS = 2


import docker_env  # noqa: E402
from fl_deploy.compose_stack import copy_project  # noqa: E402

docker_env.require_docker()


def compose_resources(project: str) -> dict:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, cmd in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                      ("volumes", ["volume", "ls", "-q"])):
        out = subprocess.run(["docker", *cmd, "--filter", label], capture_output=True, text=True).stdout.split()
        found[kind] = out
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("demo"))
    copy_project(work)

    # Like a user moving the server port: one edit in project.yml; provisioning regenerates the compose side.
    port = fl_system.free_port()
    with open(os.path.join(work, "project.yml")) as f:
        text = f.read()
    with open(os.path.join(work, "project.yml"), "w") as f:
        f.write(text.replace("fed_learn_port: 8002", f"fed_learn_port: {port}"))

    project = f"gpt2fl-e2e-{os.getpid()}"
    env = dict(os.environ, FL_PROJECT_NAME=project, FL_IMAGE=f"gpt2-fl:e2e-{os.getpid()}",
               FL_SERVER_BIND="127.0.0.1", FL_ROUNDS_TINY=str(ROUNDS))
    if os.environ.get("FL_TEST_BASE_IMAGE"):
        env["FL_BASE_IMAGE"] = os.environ["FL_TEST_BASE_IMAGE"]
    env.pop("COMPOSE_FILE", None)
    log_path = os.path.join(work, "demo.log")
    t0 = time.monotonic()
    try:
        with open(log_path, "w") as log:
            run = subprocess.run(["bash", "scripts/demo.sh", "--cpu", "--tiny"], cwd=work, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, timeout=3000)
        with open(log_path) as f:
            output = f.read()
        yield {"rc": run.returncode, "output": output, "work": work, "project": project, "env": env,
               "wall_s": time.monotonic() - t0, "port": port}
    finally:
        compose = ["docker", "compose", "-f", "compose.yaml", "-f", "compose.cpu.yaml", "--profile", "tensorboard"]
        subprocess.run([*compose, "down", "-v", "--remove-orphans", "-t", "20"], cwd=work, env=env,
                       capture_output=True)
        subprocess.run(["docker", "image", "rm", "-f", env["FL_IMAGE"]], capture_output=True)


def result_dir(demo) -> str:
    assert demo["rc"] == 0, demo["output"][-6000:]
    m = re.search(r"results:\s+(\S+)", demo["output"])
    assert m, demo["output"][-3000:]
    return os.path.join(demo["work"], m.group(1))


def test_demo_completes(demo):
    assert demo["rc"] == 0, demo["output"][-6000:]
    assert "FINISHED:COMPLETED" in demo["output"]
    for site in SITES:
        assert f"round {ROUNDS}: result from {site}" in demo["output"]  # progress was shown


def test_compose_followed_project_yml(demo):
    with open(os.path.join(demo["work"], "compose.participants.yaml")) as f:
        generated = f.read()
    port = demo["port"]
    assert f":{port}:{port}" in generated  # the server publishes project.yml's fed_learn_port
    assert "./workspace/kits/site-1:/kit:ro" in generated and "./workspace/kits/site-2:/kit:ro" in generated


def test_result_rounds_and_site_metrics(demo):
    metrics = os.path.join(result_dir(demo), "workspace", "metrics", "round_metrics.jsonl")
    with open(metrics) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert sorted(s["name"] for s in r["sites"]) == SITES
        for s in r["sites"]:
            assert {"train_loss", "global_eval_loss", "eval_loss"} <= {m["name"] for m in s["metrics"]}
    for site in SITES:
        assert os.listdir(os.path.join(result_dir(demo), "workspace", "tb_events", site))


def test_global_model_changed(demo):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = torch.load(os.path.join(result_dir(demo), "workspace", "app_server", "FL_global_model.pt"),
                       weights_only=True)["model"]
    from fl_common.model import tied_aliases

    initial = AutoModelForCausalLM.from_pretrained(os.path.join(demo["work"], "assets", "tiny", "model")).state_dict()
    assert set(final) == set(initial) - set(tied_aliases(initial))  # tied weights are kept once
    assert sum(not torch.equal(final[k], initial[k]) for k in final) > len(final) // 2
    # The exported Hugging Face folder is that same global model, with its tokenizer.
    hf_dir = os.path.join(result_dir(demo), "global_model")
    exported = AutoModelForCausalLM.from_pretrained(hf_dir).state_dict()
    assert all(torch.equal(exported[k], final[k]) for k in final)
    assert AutoTokenizer.from_pretrained(hf_dir)("a good film")["input_ids"]


def test_metrics_and_plots_exported(demo):
    with open(os.path.join(result_dir(demo), "metrics.csv")) as f:
        rows = f.read().splitlines()
    assert len(rows) == 1 + ROUNDS * (len(SITES) + 1)  # header + one row per site and one "global" per round
    for plot in ("train_loss.png", "global_perplexity.png"):
        with open(os.path.join(result_dir(demo), "plots", plot), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_default_transfer_ran(demo):
    """The default transfer (offload): every site's result, every round, reached the server spooled to disk."""
    with open(os.path.join(result_dir(demo), "workspace", "log.txt")) as f:
        log = f.read()
    for site in SITES:
        spooled = re.findall(rf"result from {site}: (\d+) of (\d+) tensors spooled to disk", log)
        assert len(spooled) == ROUNDS and all(a == b for a, b in spooled), (site, spooled)


def test_containers_ran_hardened(demo):
    """Checked on the running containers, before teardown."""
    names = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={demo['project']}"],
                           capture_output=True, text=True).stdout.split()
    assert len(names) == len(SITES) + 2
    for cid in names:
        info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        assert info["Config"]["User"] not in ("", "0", "root"), service
        assert info["HostConfig"]["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"], service
        kit = [m for m in info["Mounts"] if m["Destination"] == "/kit"][0]
        assert kit["RW"] is False, service
        assert not any("docker.sock" in m["Source"] for m in info["Mounts"]), service
        published = {p: b for p, b in (info["HostConfig"]["PortBindings"] or {}).items() if b}
        assert list(published) == ([f"{demo['port']}/tcp"] if service == "server" else []), service


def test_tensorboard_service_serves_the_results(demo):
    """The TensorBoard profile starts on the downloaded results and lists the sites' runs."""
    import urllib.request

    work, env = demo["work"], dict(demo["env"], FL_TENSORBOARD_BIND="127.0.0.1")
    compose = ["docker", "compose", "-f", "compose.yaml", "-f", "compose.cpu.yaml", "--profile", "tensorboard"]
    up = subprocess.run([*compose, "up", "-d", "--no-build", "--wait", "tensorboard"], cwd=work, env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr[-2000:]
    port = subprocess.run([*compose, "port", "tensorboard", "6006"], cwd=work, env=env, capture_output=True,
                          text=True).stdout.strip().rsplit(":", 1)[-1]
    deadline = time.monotonic() + 120
    runs = {}
    while time.monotonic() < deadline and not any(site in " ".join(runs) for site in SITES):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                runs = json.loads(r.read())
        except OSError:
            pass
        time.sleep(2)
    assert all(any(run.endswith(site) for run in runs) for site in SITES), runs


def test_teardown_leaves_nothing(demo, capsys):
    work, env = demo["work"], demo["env"]
    down = subprocess.run(["docker", "compose", "-f", "compose.yaml", "-f", "compose.cpu.yaml", "--profile", "tensorboard", "down", "-v",
                           "--remove-orphans", "-t", "20"], cwd=work, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert compose_resources(demo["project"]) == {"containers": [], "networks": [], "volumes": []}
    timings = re.findall(r"\[demo [\d:]+\] (image built in .*|all services healthy .*|job finished .*)", demo["output"])
    with capsys.disabled():
        print(f"\n[figures] e2e demo wall {demo['wall_s']:.0f}s; " + "; ".join(timings))
