#!/usr/bin/env python3
"""How late does the host learn what the server did? The demo's job, followed by scripts/submit_job.py.

    .venv/bin/python benchmarks/progress_latency.py                  # this checkout
    .venv/bin/python benchmarks/progress_latency.py --ref bceac4b    # the project at a git commit (git archive)

Runs the README's demo (scripts/demo.sh --cpu --tiny, ROUNDS rounds) in a copy of the project, under its own
compose project name, image tag and server port, and stamps every line submit_job.py prints with the host's clock
as it arrives. Then it reads the server's job log (log.json of the downloaded result: NVFlare's own timestamps,
milliseconds, UTC like the host) and, for every server event, takes the first host line that reports it or a
later event:

  round start   "Round N started."                       host line: "round N[/R] started"
  site result   "got result from client S for task: name=train"   host line: "round N[/R]: result from S"
  round end     "End persist model on server." (the round's new global model is saved)
                host line: "round N[/R] done ..." or, for a follower that prints no round end, the first line
                that reports a later event (the next round's start, the job's end)

latency = host arrival - server log time. Needs Docker with Compose v2 and the wheelhouse (docker/wheels);
FL_TEST_BASE_IMAGE as in the e2e tests. Run it under `flock /tmp/heavy.lock` on a shared machine.
Writes <out>/progress_latency.csv (one row per server event) and prints the summary per kind.
"""

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from fl_deploy import IMAGE_REPO, ROOT
from fl_deploy.harness.compose_stack import copy_project, edit_project, ensure_wheelhouse

ROUND_START = re.compile(r"Round (\d+) started")
RESULT = re.compile(r"got result from client (\S+) for task: name=train")
ROUND_END = "End persist model on server."
HOST_START = re.compile(r"round (\d+)(?:/\d+)? started")
HOST_RESULT = re.compile(r"round (\d+)(?:/\d+)?: result from (\S+)")
HOST_END = re.compile(r"round (\d+)(?:/\d+)? done")
HOST_JOB_END = re.compile(r"FINISHED")


def server_events(log_json: str) -> list:
    """[(server time s, kind, round 1-based, site or "")] from a server job's log.json, in log order."""
    events, rnd = [], None
    with open(log_json) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            msg = rec.get("message", "")
            t = datetime.strptime(rec["asctime"], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc).timestamp()
            if m := ROUND_START.search(msg):
                rnd = int(m.group(1)) + 1
                events.append((t, "round start", rnd, ""))
            elif (m := RESULT.search(msg)) and rnd is not None:
                events.append((t, "site result", rnd, m.group(1)))
            elif ROUND_END in msg and rnd is not None:
                events.append((t, "round end", rnd, ""))
    return events


def host_reports(lines: list, events: list) -> list:
    """For each host line (arrival time, text): the index in `events` of the latest server event it reports."""
    index = {(kind, rnd, site): i for i, (_, kind, rnd, site) in enumerate(events)}
    out = []
    for t, text in lines:
        i = None
        if m := HOST_RESULT.search(text):
            i = index.get(("site result", int(m.group(1)), m.group(2)))
        elif m := HOST_START.search(text):
            i = index.get(("round start", int(m.group(1)), ""))
        elif m := HOST_END.search(text):
            i = index.get(("round end", int(m.group(1)), ""))
        elif HOST_JOB_END.search(text):
            i = len(events) - 1
        if i is not None:
            out.append((t, i))
    return out


def latencies(lines: list, events: list) -> list:
    """Rows: server event + the arrival of the first host line reporting it or a later event."""
    reports = host_reports(lines, events)
    rows = []
    for i, (t, kind, rnd, site) in enumerate(events):
        seen = [ht for ht, j in reports if j >= i]
        host = min(seen) if seen else None
        rows.append({"kind": kind, "round": rnd, "site": site, "server_time": f"{t:.3f}",
                     "host_time": "" if host is None else f"{host:.3f}",
                     "latency_s": "" if host is None else f"{host - t:.3f}"})
    return rows


def prepare(work: str, ref: str):
    if ref:
        archive = subprocess.run(["git", "-C", ROOT, "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
        wheels = ensure_wheelhouse()
        os.makedirs(os.path.join(work, "docker", "wheels"), exist_ok=True)
        for name in os.listdir(wheels):
            dst = os.path.join(work, "docker", "wheels", name)
            if not os.path.exists(dst):
                os.link(os.path.join(wheels, name), dst)
    else:
        copy_project(work)
    edit_project(work)


def run_demo(work: str, rounds: int, log_path: str) -> tuple:
    """(return code, [(arrival time, line)], environment) of scripts/demo.sh --cpu --tiny in work."""
    tag = f"lat-{os.getpid()}"
    env = dict(os.environ, FL_PROJECT_NAME=f"gpt2fl-{tag}", FL_IMAGE=f"{IMAGE_REPO}:{tag}", FL_SERVER_BIND="127.0.0.1",
               FL_ROUNDS_TINY=str(rounds))
    if os.environ.get("FL_TEST_BASE_IMAGE"):
        env["FL_BASE_IMAGE"] = os.environ["FL_TEST_BASE_IMAGE"]
    env.pop("COMPOSE_FILE", None)
    lines = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "scripts/demo.sh", "--cpu", "--tiny"], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            t = time.time()
            lines.append((t, line.rstrip("\n")))
            log.write(f"{t:.3f} {line}")
        rc = proc.wait()
    return rc, lines, env


def teardown(work: str, env: dict):
    compose = ["docker", "compose", "-f", "compose.yaml", "-f", "compose.cpu.yaml", "--profile", "tensorboard"]
    subprocess.run([*compose, "down", "-v", "--remove-orphans", "-t", "20"], cwd=work, env=env, capture_output=True)
    subprocess.run(["docker", "image", "rm", "-f", env["FL_IMAGE"]], capture_output=True)


def summarize(rows: list) -> list:
    out = []
    for kind in ("round start", "site result", "round end"):
        values = [float(r["latency_s"]) for r in rows if r["kind"] == kind and r["latency_s"]]
        if values:
            out.append((kind, len(values), statistics.median(values), statistics.mean(values), max(values)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default="", help="git commit to measure (default: this checkout's files)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "progress_latency"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="progress-latency-")
    env = None
    try:
        prepare(work, args.ref)
        rc, lines, env = run_demo(work, args.rounds, os.path.join(args.out, "demo.log"))
        if rc != 0:
            print(f"error: the demo failed (exit {rc}); see {args.out}/demo.log", file=sys.stderr)
            return 1
        m = next((re.search(r"results:\s+(\S+)", t) for _, t in lines if re.search(r"results:\s+(\S+)", t)), None)
        if not m:
            print(f"error: no 'results:' line in the demo's output; see {args.out}/demo.log", file=sys.stderr)
            return 1
        log_json = os.path.join(work, m.group(1), "workspace", "log.json")
        rows = latencies(lines, server_events(log_json))
    finally:
        if env:
            teardown(work, env)
        shutil.rmtree(work, ignore_errors=True)
    path = os.path.join(args.out, "progress_latency.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{'event':<12} {'n':>3} {'median s':>9} {'mean s':>8} {'max s':>7}")
    for kind, n, med, mean, mx in summarize(rows):
        print(f"{kind:<12} {n:>3} {med:>9.2f} {mean:>8.2f} {mx:>7.2f}")
    print(f"per event: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
