"""End to end, as a user: the README's demo command (scripts/demo.sh --cpu --tiny) on a real Docker engine, in a
clean copy of the project, then checks of the downloaded result, then the README's own teardown, which must leave
nothing behind.

What the user sees is checked as it arrives: each line of the demo's output is stamped with the host's clock when it
comes, so the follower's events are shown live (before the job ends, in the server's order). The TensorBoard
service is opened in a real browser (headless Chromium, tests/e2e/browser.py): the scalars dashboard must render
both sites' runs, the server's, the global metrics and the system metrics; screenshots go to FL_TEST_ARTIFACTS
(default: the test's work folder).

Needs a Docker engine with Compose v2 and Chromium (.ci/run installs Debian's package). The image's base comes
from FL_TEST_BASE_IMAGE (CI builds one locally, since no registry is reachable there); packages come from the
wheelhouse (docker/wheels), never from a network.
"""

import json
import os
import re
import shlex
import subprocess
import time
from datetime import datetime

import pytest

from fl_deploy.harness import local_federation

ROOT = local_federation.ROOT
SITES = ["site-1", "site-2"]
ROUNDS = 3


import docker_env  # noqa: E402
from browser import Browser, find_chromium  # noqa: E402
from fl_deploy import IMAGE_REPO  # noqa: E402
from fl_deploy.harness.compose_stack import copy_project, edit_project  # noqa: E402
from stack_harness import base_image_env, compose_resources  # noqa: E402

docker_env.require_docker()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("demo"))
    copy_project(work)

    # Like a user moving the server port: one edit in project.yml; provisioning regenerates the compose side.
    port = edit_project(work)

    project = f"gpt2fl-e2e-{os.getpid()}"
    env = dict(os.environ, FL_PROJECT_NAME=project, FL_IMAGE=f"{IMAGE_REPO}:e2e-{os.getpid()}",
               FL_SERVER_BIND="127.0.0.1", FL_ROUNDS_TINY=str(ROUNDS), **base_image_env())
    env.pop("COMPOSE_FILE", None)
    log_path = os.path.join(work, "demo.log")
    t0 = time.monotonic()
    try:
        lines = []  # (host time on arrival, line): what the user saw, and when
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["bash", "scripts/demo.sh", "--cpu", "--tiny"], cwd=work, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))
                log.write(f"{lines[-1][0]:.3f} {line}")  # each line with its arrival time on the host
            rc = proc.wait(timeout=3000)
        output = "\n".join(line for _, line in lines)
        yield {"rc": rc, "output": output, "lines": lines, "work": work, "project": project, "env": env,
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
    for site in SITES:  # progress was shown
        assert re.search(rf"round {ROUNDS}(/{ROUNDS})?: result from {site}\b", demo["output"]), demo["output"][-3000:]


EVENT_LINE = re.compile(r"^\[(\d\d:\d\d:\d\d\.\d{3})\] (.*)$")


def server_times(result: str) -> dict:
    """{("round_started", r) / ("site_result", r, site) / ("round_done", r): server time} from the job's log.json."""
    from fl_deploy.admin.follow import ServerLog

    with open(os.path.join(result, "workspace", "log.json")) as f:
        events = ServerLog().records(f.read().splitlines())
    return {(e["event"], e["round"], *([e["site"]] if "site" in e else [])): e["time"] for e in events
            if e["event"] in ("round_started", "site_result", "round_done")}


def test_progress_is_shown_live_in_the_servers_order(demo, figures):
    """submit_job.py's follower: every round's start, each site's result and the round's end (with its duration
    and the ETA) are printed with the server's time, in the server's order, and each arrives while the job is still
    running: a round's end is on the host before the next round's first result exists on the server."""
    result = result_dir(demo)
    day = time.strftime("%Y-%m-%d", time.localtime(demo["lines"][0][0]))
    shown = []  # (arrival, event time, text)
    for arrival, line in demo["lines"]:
        if m := EVENT_LINE.match(line):
            stamp = datetime.strptime(f"{day} {m.group(1)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
            shown.append((arrival, stamp, m.group(2)))
    texts = [t for _, _, t in shown]
    for rnd in range(1, ROUNDS + 1):
        assert any(re.fullmatch(rf"round {rnd}(/{ROUNDS})? started", t) for t in texts), texts
        for site in SITES:
            assert any(re.match(rf"  round {rnd}(/{ROUNDS})?: result from {site} \(", t) for t in texts), texts
        assert any(re.match(rf"round {rnd}/{ROUNDS} done in [\d.]+ s: {len(SITES)} results aggregated", t)
                   for t in texts), texts
    assert any(re.search(r"round 1/\d+ done in .*; ETA \S+", t) for t in texts), texts
    stamps = [stamp for _, stamp, _ in shown]
    assert stamps == sorted(stamps), shown  # in the server's order
    server = server_times(result)
    latencies = {}
    for arrival, stamp, text in shown:
        if m := re.match(r"round (\d+)/\d+ done", text):
            rnd = int(m.group(1))
            assert stamp == pytest.approx(server[("round_done", rnd)], abs=0.002)  # the server's time, not ours
            latencies[rnd] = arrival - server[("round_done", rnd)]
            if rnd < ROUNDS:  # live: on the host before the next round had its first result on the server
                first_next = min(server[("site_result", rnd + 1, s)] for s in SITES)
                assert arrival < first_next, (text, arrival, first_next)
    job_end = next(arrival for arrival, _, text in shown if "FINISHED:COMPLETED" in text)
    assert max(a for a, _, t in shown if "started" in t) < job_end
    figures("round end on the server -> its line on the host: "
          + ", ".join(f"round {r}: {s:.2f}s" for r, s in sorted(latencies.items())))


def test_site_logs_streamed_into_the_result(demo):
    """Each site's job log reached the server while the job ran and is in the result; it holds the client's own
    lines and no bytecode (dill's dis.dis output under NVFlare's print redirect, fl_site/print_redirect.py)."""
    result = result_dir(demo)
    for site in SITES:
        with open(os.path.join(result, "site_logs", site, "log.txt")) as f:
            log = f.read()
        assert f"{site}: round {ROUNDS - 1} received" in log, log[-2000:]
        assert f"{site}: round {ROUNDS - 1} steps=" in log
        bytecode = [line for line in log.splitlines() if re.search(r"\b(LOAD_FAST|LOAD_GLOBAL|RESUME|RETURN_VALUE)\b",
                                                                     line)]
        assert bytecode == [], bytecode[:5]
    assert f"site logs:    {os.path.relpath(os.path.join(result, 'site_logs'), demo['work'])}" in demo["output"]


SYSTEM_SITE_TAGS = {"system/round_time_s", "system/received_bytes", "system/sent_bytes", "system/peak_memory_bytes",
                    "system/train_tokens_per_s"}
SYSTEM_SERVER_TAGS = {"system/round_duration_s", "system/server_peak_memory_bytes", "global/train_loss",
                      "global/global_eval_loss"}


def test_system_metrics_exported(demo, figures):
    """system_metrics.csv and the round time and bytes plot, from the job's TensorBoard events."""
    import csv

    result = result_dir(demo)
    with open(os.path.join(result, "system_metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    by_run = {}
    for r in rows:
        by_run.setdefault(r["run"], {}).setdefault(r["metric"], {})[int(r["round"])] = float(r["value"])
    for site in SITES:
        metrics = by_run[site]
        assert {f"system/{m}" for m in metrics} == SYSTEM_SITE_TAGS, metrics  # CPU: no GPU metrics
        assert all(sorted(series) == list(range(1, ROUNDS + 1)) for series in metrics.values())
        assert len(set(metrics["received_bytes"].values())) == 1 and metrics["received_bytes"][1] > 0
        assert all(v > 0 for m in ("peak_memory_bytes", "train_tokens_per_s", "round_time_s")
                   for v in metrics[m].values())
    server = next(run for run, metrics in by_run.items() if "round_duration_s" in metrics)
    assert set(by_run[server]) == {"round_duration_s", "server_peak_memory_bytes"}
    with open(os.path.join(result, "plots", "round_time_and_bytes.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    figures("system metrics, round 1 of the tiny CPU demo: " + "; ".join(
        f"{run} {m}={v[1]:.4g}" for run in sorted(by_run) for m, v in sorted(by_run[run].items())))


def test_compose_followed_project_yml(demo):
    with open(os.path.join(demo["work"], "compose.participants.yaml")) as f:
        generated = f.read()
    port = demo["port"]
    assert f":{port}:{port}" in generated  # the server publishes project.yml's fed_learn_port
    assert "./workspace/kits/site-1:/kit:ro" in generated and "./workspace/kits/site-2:/kit:ro" in generated


def test_the_demos_choices_stay_for_later_commands(demo):
    """Issue 15, case 16: what `demo.sh --cpu --tiny` chose is in .env, so the README's next commands on this host
    (docker compose ..., a plain submit_job.py) use the CPU overlay and the tiny offline job, not GPUs and gpt2."""
    from fl_deploy.host import read_env_file

    assert demo["rc"] == 0, demo["output"][-3000:]
    assert "recorded in .env (its last block) for every later command on this host: " in demo["output"]
    env = read_env_file(os.path.join(demo["work"], ".env"))
    assert env["COMPOSE_FILE"] == "compose.yaml:compose.cpu.yaml" and env["HF_HUB_OFFLINE"] == "1"
    assert env["FL_MODEL"] == "/assets/tiny/model" and env["FL_DATASET"] == "/assets/tiny/imdb"
    # A later plain `docker compose` in that folder, from a shell that has none of these set:
    shell = {k: v for k, v in demo["env"].items() if not k.startswith(("FL_", "COMPOSE_", "HF_"))}
    shell["FL_PROJECT_NAME"] = demo["project"]
    run = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=demo["work"], env=shell,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    for site in SITES:
        assert not (services[site].get("deploy") or {}).get("resources"), services[site].get("deploy")


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


def test_preflight_predicted_the_round_within_a_factor_of_2(demo, figures):
    """submit_job.py's sizing check (fl_deploy/submit_job/sizing.py) printed its prediction before the job, showed
    it beside round 1, and results/<job_id>/sizing.json holds it beside the measured exchange (the median over the
    rounds after the first, ROUNDS - 1 of them): within 2x."""
    assert re.search(r"predicted \(fl_deploy/submit_job/sizing.py\): server peak [\d.]+ GiB", demo["output"]), \
        demo["output"][-3000:]
    assert re.search(r"round 1/\d+ done in .*exchange predicted [\d.]+ s of it", demo["output"])
    with open(os.path.join(result_dir(demo), "sizing.json")) as f:
        sizing = json.load(f)
    predicted, measured = sizing["predicted"]["round_exchange_s"], sizing["measured"]["round_exchange_s"]
    figures(f"preflight on the tiny job ({len(SITES)} sites): exchange {predicted} s per round predicted, "
            f"{measured} s measured (median of rounds 2-{ROUNDS})")
    assert measured is not None and 0.5 <= predicted / measured <= 2, sizing


def test_image_has_what_kubernetes_runs(demo):
    """docs/kubernetes.md runs this image with NVFlare's k8s launcher, whose parent and job pods start the Python
    of docker/k8s.yaml with the workspace mounted at the image's NVFL_WORKSPACE: both are there in the built image,
    the Python with the project's packages, the workspace writable by the image's user."""
    import yaml

    with open(os.path.join(ROOT, "docker", "k8s.yaml")) as f:
        config = yaml.safe_load(f)
    python, workspace = config["parent"]["python_path"], config["parent"]["workspace_mount_path"]
    assert config["job_launcher"]["default_python_path"] == python
    run = subprocess.run(["docker", "run", "--rm", "--entrypoint", python, demo["env"]["FL_IMAGE"], "-c",
                          "import os, nvflare, torch, transformers, trl; print(nvflare.__version__, "
                          f"os.environ['NVFL_WORKSPACE'], os.access({workspace!r}, os.W_OK), os.getuid())"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    version, env_workspace, writable, uid = run.stdout.split()
    # The image's user is the k8s config's runAsUser (uid 10001), unless demo.sh built it for a non-root user.
    image_uid = os.getuid() if os.geteuid() else config["parent"]["pod_security_context"]["runAsUser"]
    assert (version, env_workspace, writable, uid) == ("2.9.0", workspace, "True", str(image_uid))


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


def test_kit_expiry_shown_by_the_preflight_the_start_check_and_the_health_output(demo):
    """Issue 24 case 1: until when each kit works, where a user looks (checked on the running containers)."""
    assert re.search(r"kits: 4 valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC at least", demo["output"]), demo["output"][-3000:]
    names = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={demo['project']}"],
                           capture_output=True, text=True).stdout.split()
    for cid in names:
        info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
        logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        assert re.search(r"fl-kit-check: \S+: certificate until .* \(3\d\d days left\), root CA until",
                         logs.stdout + logs.stderr), service
        if service != "admin":  # the admin console has no healthcheck
            health = [h["Output"] for h in info["State"]["Health"]["Log"] if h["ExitCode"] == 0]
            assert health and "certificate until" in health[-1], (service, info["State"]["Health"])


@pytest.fixture(scope="module")
def tensorboard(demo):
    """The TensorBoard profile, started as the README says, on the downloaded results; its URL."""
    result_dir(demo)
    work, env = demo["work"], dict(demo["env"], FL_TENSORBOARD_BIND="127.0.0.1")
    compose = ["docker", "compose", "-f", "compose.yaml", "-f", "compose.cpu.yaml", "--profile", "tensorboard"]
    up = subprocess.run([*compose, "up", "-d", "--no-build", "--wait", "tensorboard"], cwd=work, env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr[-2000:]
    port = subprocess.run([*compose, "port", "tensorboard", "6006"], cwd=work, env=env, capture_output=True,
                          text=True).stdout.strip().rsplit(":", 1)[-1]
    return f"http://127.0.0.1:{port}"


def get_json(url: str, ready, timeout: float = 120):
    import urllib.request

    deadline = time.monotonic() + timeout
    data = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.loads(r.read())
            if ready(data):
                return data
        except OSError:
            pass
        time.sleep(2)
    return data


def test_tensorboard_service_serves_the_results(tensorboard):
    """The TensorBoard profile lists the sites' runs and the server's, with their metrics and system metrics."""
    runs = get_json(f"{tensorboard}/data/runs", lambda r: all(any(x.endswith(s) for x in r) for s in SITES))
    assert all(any(run.endswith(site) for run in runs) for site in SITES), runs
    tags = get_json(f"{tensorboard}/data/plugin/scalars/tags", lambda t: len(t) >= len(SITES) + 1)
    for site in SITES:
        run = next(r for r in tags if r.endswith(f"tb_events/{site}"))
        assert SYSTEM_SITE_TAGS | {"train_loss", "global_eval_loss"} <= set(tags[run]), tags[run]
    server = [r for r in tags if "system/round_duration_s" in tags[r]]
    assert len(server) == 1 and SYSTEM_SERVER_TAGS <= set(tags[server[0]]), tags


# TensorBoard's Time Series dashboard (its default page, the scalars of every run): each chart card's title and the
# rows of its data table (run, smoothed value, value, step, time), which it fills once the run's points are drawn.
TB_CARDS = """
(() => Object.fromEntries([...document.querySelectorAll('scalar-card-component')].map(c => [
  ((c.querySelector('tb-truncated-path') || {}).innerText || '').replace(/\\s+/g, ''),
  [...c.querySelectorAll('tb-data-table-content-row')].map(r => r.innerText.split(/\\s+/).filter(x => x))])))()
"""
TB_FILTER = """
((text) => { const i = document.querySelector('input[placeholder*="Filter tags"]'); if (!i) return false;
  i.value = text; i.dispatchEvent(new Event('input', {bubbles: true})); return true; })(%s)
"""


def test_tensorboard_page_in_a_browser(demo, tensorboard, figures):
    """The scalars as a person sees them: headless Chromium opens TensorBoard's default page (Time Series), filters
    the tags as a user types, and every expected chart is drawn with the expected runs' values in its table: both
    sites' runs and the server's; the global metrics (the global model's held-out loss and perplexity each site
    measured, the server's global/* aggregates) and the system metrics. Screenshots: tensorboard-global.png,
    tensorboard-system.png."""
    if not find_chromium():
        docker_env.skip_unless_required("no Chromium (.ci/run installs Debian's chromium package)")
    out = os.environ.get("FL_TEST_ARTIFACTS") or demo["work"]
    os.makedirs(out, exist_ok=True)
    job = os.path.basename(result_dir(demo))
    server_run = next(r for r in get_json(f"{tensorboard}/data/plugin/scalars/tags", bool)
                      if r.startswith(job) and r.rsplit("/", 1)[-1] not in SITES).rsplit("/", 1)[-1]
    expected = {
        "global": {**{t: SITES for t in ("global_eval_loss", "global_perplexity")},
                   **{t: [server_run] for t in ("global/global_eval_loss", "global/train_loss", "global/eval_loss")}},
        "system": {**{t: SITES for t in SYSTEM_SITE_TAGS},
                   **{t: [server_run] for t in ("system/round_duration_s", "system/server_peak_memory_bytes")}},
    }
    shots, drawn = {}, {}
    with Browser(1400, 1500) as browser:
        browser.open(f"{tensorboard}/#timeseries")
        for name, cards in expected.items():
            deadline = time.monotonic() + 180
            while not browser.evaluate(TB_FILTER % json.dumps(name)):  # the page is still loading
                assert time.monotonic() < deadline, browser.text()[:2000]
                time.sleep(1)

            def values(card_rows: list) -> dict:
                """{run's last path part: its smoothed value} of a card's data table."""
                return {row[0].rsplit("/", 1)[-1]: row[1] for row in card_rows if len(row) >= 2}

            while True:
                shown = browser.evaluate(TB_CARDS) or {}
                missing = {t: runs for t, runs in cards.items()
                           if not set(runs) <= {r for r, v in values(shown.get(t, [])).items()
                                                if re.fullmatch(r"-?[\d,]+(\.\d+)?(e[+-]?\d+)?", v)}}
                if not missing:
                    break
                assert time.monotonic() < deadline, f"charts not drawn after 180s: {missing}; shown: {shown}"
                time.sleep(2)
            drawn[name] = {t: values(shown[t]) for t in cards}
            shots[name] = browser.screenshot(os.path.join(out, f"tensorboard-{name}.png"))
    for path in shots.values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 20000
    figures(f"TensorBoard in Chromium (Time Series): {sum(len(c) for c in drawn.values())} charts drawn "
          f"with runs {sorted({r for c in drawn.values() for v in c.values() for r in v})}; e.g. "
          f"system/round_duration_s {drawn['system']['system/round_duration_s']}; screenshots "
          f"{sorted(shots.values())}")


def test_a_llama_model_with_lora_runs_through_the_same_stack(demo, figures):
    """Any Hugging Face causal LM (issue 22): a tiny random Llama (untied embeddings) with the demo's tiny tokenizer,
    written into the stack's assets (what `scripts/make_tiny_assets.py --arch llama` makes), one more job through the
    demo's running stack with LoRA on PEFT's default targets; its exported global model loads on the host and
    generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fl_deploy import make_tiny_assets

    work, env = demo["work"], demo["env"]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "assets", "tiny", "model"))
    make_tiny_assets.save_random_model(os.path.join(work, "assets", "tiny-llama"), tokenizer, "llama")
    t0 = time.monotonic()
    run = subprocess.run(["python3", "scripts/submit_job.py", "--model", "/assets/tiny-llama", "--lora",
                          "--rounds", "1"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "FINISHED:COMPLETED" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
    result = re.search(r"results:\s+(\S+)", run.stdout)
    assert result, run.stdout[-3000:]
    exported = os.path.join(work, result.group(1), "global_model")
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.config.tie_word_embeddings
    inputs = tokenizer(["I thought the film was"], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=5, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 5
    figures(f"e2e tiny Llama LoRA job (1 round) on the demo's stack: {time.monotonic() - t0:.0f} s from "
            "submit_job.py's start to the exported result")


README_TEARDOWN = re.compile(r"`(docker compose --profile \S+ down -v)`")


def test_teardown_leaves_nothing(demo, figures):
    """The README's teardown line, as it is written, stops everything the README had the user start (the
    TensorBoard profile included: a plain `docker compose down -v` leaves it running and the network in use)."""
    work, env = demo["work"], dict(demo["env"], COMPOSE_FILE="compose.yaml:compose.cpu.yaml")
    with open(os.path.join(ROOT, "README.md")) as f:
        teardown = README_TEARDOWN.search(f.read())
    assert teardown, "README.md names no `docker compose --profile ... down -v` teardown"
    running = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={demo['project']}",
                              "--filter", "label=com.docker.compose.service=tensorboard"], capture_output=True,
                             text=True).stdout.split()
    assert running, "TensorBoard should still run here (test_tensorboard_service_serves_the_results started it)"
    down = subprocess.run(shlex.split(teardown.group(1)), cwd=work, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert compose_resources(demo["project"]) == {"containers": [], "networks": [], "volumes": []}
    timings = re.findall(r"\[demo [\d:]+\] (image built in .*|all services healthy .*|job finished .*)", demo["output"])
    figures(f"e2e demo wall {demo['wall_s']:.0f}s; " + "; ".join(timings))
