"""Fault cases too slow for CI, in one command that prints PASS or FAIL per case (docs/reliability.md).

    .venv/bin/python scripts/check_slow_cases.py                         # every case (17 min on 2 cores, 2026-12-01)
    .venv/bin/python scripts/check_slow_cases.py --cases slow-link --rates-mb-s 20,5
    .venv/bin/python scripts/check_slow_cases.py --cases cold-starts --cold-starts 5 --sites 4

slow-link    A slow link between one site and the server (FLIP #684, NVFlare PR #4715): a federation of processes
             from provisioned kits, two sites, one of them behind a throttling TCP relay on loopback (pure Python, no
             privileges). Its kit dials the relay through NVFlare's own `connect_to` (host and port) in project.yml;
             nothing in a signed kit is edited. For each rate, a one-round exchange-only job with GPT-2's 124M
             architecture (the default transfer: FOBS streaming, disk offload, the shared download) must complete.
             A job that does not complete is reported with the server's and the site's last errors.
cold-starts  Every site on one host starting cold together (issue 15, case 12; NVFlare #1080, datasets #4661): the
             README's deployment (scripts/demo.sh --cpu --tiny) with --sites sites in an isolated copy of the project,
             then, --cold-starts times in all, `docker compose down -v` and up again with empty volumes and a
             plain `python3 scripts/submit_job.py`. Each start's job must complete, every site's prepared dataset
             must be in its own volume (HF_DATASETS_CACHE) and nothing in the shared Hugging Face cache.
volume-full  The server's volume fills during a job (fl_deploy/harness/slow_volume_full.py: a tmpfs as the server's
             workspace, filled after round 1; needs root).
kit-clock    A kit's certificates under a shifted clock (issue 24 cases 1, 2; fl_deploy/harness/slow_kit_clock.py):
             libfaketime in a container of the image, the start check and a mutual-TLS handshake a year on, and a
             clock 2 hours behind the provisioning host's.
architectures  A tiny Llama and a tiny Qwen2, each with full weights and with LoRA, as FL jobs through provisioned
             processes (issue 22; fl_deploy/harness/slow_architectures.py): CI runs two of the four.

Needs the project's venv; cold-starts also a Docker engine with Compose v2 (the image is built from docker/wheels
on --base-image). Exit 0 when every case passed, 1 otherwise.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from fl_deploy import BASE_IMAGE, IMAGE_REPO

MB = 1_000_000


class TokenBucket:
    """Paces bytes to ``rate`` bytes/s, shared by every connection that takes from it (one direction of a link)."""

    def __init__(self, rate: float):
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int):
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


class ThrottledRelay:
    """A TCP relay on 127.0.0.1:``listen_port`` to 127.0.0.1:``target_port`` that carries at most ``rate`` bytes/s
    each way (all its connections together, like one link). ``rate`` may be changed while it runs; ``moved``
    counts the bytes relayed per direction ("up": to the target)."""

    CHUNK = 64 << 10  # small chunks keep the link fair between connections (the site's heartbeats, its job's data)

    def __init__(self, listen_port: int, target_port: int, rate: float):
        self.target_port = target_port
        self.up, self.down = TokenBucket(rate), TokenBucket(rate)
        self.moved = {"up": 0, "down": 0}
        self.connections = []  # (from the site, to the server) per relayed connection
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def rate(self) -> float:
        return self.up.rate

    @rate.setter
    def rate(self, value: float):
        self.up.rate = self.down.rate = value

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), 10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)  # an idle connection stays open, as on a real link (the 10 s was for connecting)
            self.connections.append((client, server))
            for src, dst, bucket, way in ((client, server, self.up, "up"), (server, client, self.down, "down")):
                threading.Thread(target=self._pump, args=(src, dst, bucket, way), daemon=True).start()

    def _pump(self, src, dst, bucket, way):
        try:
            while True:
                data = src.recv(self.CHUNK)
                if not data:
                    break
                bucket.take(len(data))
                dst.sendall(data)
                self.moved[way] += len(data)
        except OSError:
            pass
        finally:
            for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    sock.shutdown(how)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self.listener.close()


def last_errors(text: str, n: int = 3) -> list:
    return [line.strip()[:300] for line in text.splitlines() if re.search(r" - (ERROR|CRITICAL) - |Timeout|timed out",
                                                                          line)][-n:]


def slow_link(args) -> list:
    """[(passed, what, detail)] for each rate: a 124M exchange-only round with one site behind the relay."""
    from fl_deploy import make_tiny_assets
    from fl_deploy.harness import local_federation
    from fl_deploy import make_job

    work = tempfile.mkdtemp(prefix="slow-link-", dir=args.work)
    model = make_tiny_assets.random_gpt2(os.path.join(work, "model"))
    rates = [float(r) for r in args.rates_mb_s.split(",")]
    relay_port = local_federation.free_port()
    sites = ["site-1", "site-2"]  # site-2 dials the relay
    fed = local_federation.ProcessFederation(
        work, sites, name="slowlink",
        site_props={"site-2": {"connect_to": {"host": "localhost", "port": relay_port}}})
    relay = ThrottledRelay(relay_port, fed.port, rates[0] * MB)
    with open(os.path.join(fed.kits["site-2"], "startup", "fed_client.json")) as f:
        dials = json.load(f)["servers"][0]["service"]["target"]
    assert dials == f"localhost:{relay_port}", dials
    results = []
    fed.start()
    try:
        fed.wait_for_sites(timeout=300)
        job = os.path.join(work, "job")
        assert make_job.main(["--out", job, "--sites", ",".join(sites), "--rounds", "1", "--model", model,
                              "--dataset", "unused", "--exchange_only"]) == 0
        for rate in rates:
            relay.rate = rate * MB
            before = dict(relay.moved)
            t0 = time.monotonic()
            submitted = fed.nvflare("job", "submit", "-j", job)
            if submitted.get("status") != "ok":
                results.append((False, f"{rate:g} MB/s", f"the job was not submitted: {submitted}"))
                continue
            job_id = submitted["data"]["job_id"]
            status, deadline = "", time.monotonic() + args.job_timeout_s
            while not status.startswith("FINISHED") and time.monotonic() < deadline:
                time.sleep(5)  # the admin commands may time out while the server is busy: ask again
                try:
                    status = (fed.nvflare("job", "meta", job_id, timeout=120).get("data") or {}).get("status") or ""
                except (AssertionError, ValueError, subprocess.TimeoutExpired):
                    pass
            status = status or f"not finished after {args.job_timeout_s}s"
            wall = time.monotonic() - t0
            up, down = (relay.moved[w] - before[w] for w in ("up", "down"))
            detail = (f"job {status} in {wall:.0f}s; through the relay {down / MB:.0f} MB to site-2, {up / MB:.0f} MB "
                      f"from it ({(up + down) / MB / wall:.1f} MB/s on average over the job)")
            if status != "FINISHED:COMPLETED":
                logs = []
                for who, path in (("server", os.path.join(fed.workspace("localhost"), job_id, "log.txt")),
                                  ("site-2", os.path.join(fed.workspace("site-2"), job_id, "log.txt"))):
                    if os.path.isfile(path):
                        with open(path) as f:
                            logs += [f"{who}: {line}" for line in last_errors(f.read())]
                detail += "; " + (" | ".join(logs) or "no error in the job logs")
            results.append((status == "FINISHED:COMPLETED", f"{rate:g} MB/s", detail))
    finally:
        fed.stop()
        relay.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def cold_starts(args) -> list:
    """[(passed, what, detail)] for each cold start of the README's deployment with --sites sites on one host."""
    from fl_deploy.harness.compose_stack import checkout_env, copy_project, edit_project

    work = tempfile.mkdtemp(prefix="cold-starts-", dir=args.work)
    copy_project(work)
    sites = [f"site-{i + 1}" for i in range(args.sites)]
    edit_project(work, sites=sites)
    project = f"cold-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_", "HF_"))}
    env = checkout_env(work, dict(env, FL_PROJECT_NAME=project, FL_IMAGE=f"{IMAGE_REPO}:{project}",
                                  FL_SERVER_BIND="127.0.0.1", FL_BASE_IMAGE=args.base_image, FL_ROUNDS_TINY="1"))

    def sh(cmd, timeout=1800):
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    def caches_ok() -> str:
        """'' when each site's prepared data is in its own volume and none in the shared cache, else what is not."""
        problems = []
        for site in sites:
            own = sh(["docker", "compose", "exec", "-T", site, "sh", "-c", "ls -A /workspace/hf-datasets | wc -l"])
            if own.returncode != 0 or int(own.stdout.strip() or 0) == 0:
                problems.append(f"{site}: nothing in its own /workspace/hf-datasets")
        shared = sh(["docker", "compose", "exec", "-T", "server", "sh", "-c",
                     "ls -A /hf-cache/datasets 2>/dev/null | wc -l"])
        if int((shared.stdout.strip() or "0")) != 0:
            problems.append("the shared /hf-cache holds datasets files")
        return "; ".join(problems)

    results = []
    try:
        for n in range(1, args.cold_starts + 1):
            t0 = time.monotonic()
            if n == 1:  # build, provision, tiny assets, up, the demo's job: what a user does first
                run = sh(["bash", "scripts/demo.sh", "--cpu", "--tiny"], timeout=3600)
            else:  # cold again: every volume gone (workspaces, the shared cache), then the README's commands
                down = sh(["docker", "compose", "down", "-v", "-t", "20"], timeout=300)
                up = sh(["docker", "compose", "up", "-d", "--no-build", "--wait"], timeout=900)
                run = up if up.returncode != 0 or down.returncode != 0 else \
                    sh([sys.executable, "scripts/submit_job.py", "--interval", "2"], timeout=1800)
            out = run.stdout + run.stderr
            done = run.returncode == 0 and "FINISHED:COMPLETED" in out
            problem = "" if not done else caches_ok()
            detail = f"{time.monotonic() - t0:.0f}s, {len(sites)} sites" + \
                (f"; job FINISHED:COMPLETED, each site's datasets cache in its own volume" if done and not problem
                 else f"; {problem or 'failed: ' + ' | '.join(out.strip().splitlines()[-4:])[-600:]}")
            results.append((done and not problem, f"{n}/{args.cold_starts}", detail))
            if not done:
                break
    finally:
        sh(["docker", "compose", "down", "-v", "--remove-orphans", "-t", "20"], timeout=300)
        subprocess.run(["docker", "image", "rm", "-f", env["FL_IMAGE"]], capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


from fl_deploy.harness.slow_volume_full import volume_full  # noqa: E402
from fl_deploy.harness.slow_kit_clock import kit_clock  # noqa: E402
from fl_deploy.harness.slow_architectures import architectures  # noqa: E402

CASES = {"slow-link": slow_link, "cold-starts": cold_starts, "volume-full": volume_full, "kit-clock": kit_clock,
         "architectures": architectures}


def main(argv=None) -> int:
    from fl_deploy.host import setting

    p = argparse.ArgumentParser(prog="check_slow_cases.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    p.add_argument("--rates-mb-s", default="20,5", help="slow-link: the relay's rates, MB/s each way (1 MB = 1e6 B)")
    p.add_argument("--job-timeout-s", type=int, default=3600, help="slow-link: seconds to wait for each job")
    p.add_argument("--cold-starts", type=int, default=5, help="cold-starts: starts in a row")
    p.add_argument("--sites", type=int, default=4, help="cold-starts: sites on the host")
    p.add_argument("--base-image", default=setting("FL_BASE_IMAGE", BASE_IMAGE),
                   help="cold-starts: FL_BASE_IMAGE of the image built (default: $FL_BASE_IMAGE, .env, or "
                        f"{BASE_IMAGE})")
    p.add_argument("--volume-full-s", type=int, default=30,
                   help="volume-full: seconds within which the job must end once the server's volume is full")
    p.add_argument("--kit-image", default=None, help="kit-clock: the image to run (default: FL_IMAGE, the deployment's image)")
    p.add_argument("--work", default=None, help="where the copies go (default: the system's temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folders")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        p.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(CASES)}")
    if args.sites < 2 or args.cold_starts < 1:
        p.error("--sites must be at least 2 and --cold-starts at least 1")
    failed = 0
    for case in cases:
        t0 = time.monotonic()
        try:
            results = CASES[case](args)
        except Exception as e:  # the case could not run: that is a FAIL with its reason, not a traceback
            results = [(False, "", f"could not run: {type(e).__name__}: {str(e).strip()[-600:]}")]
        for passed, what, detail in results:
            failed += not passed
            print(f"{'PASS' if passed else 'FAIL'} {case}{' ' + what if what else ''}: {detail}", flush=True)
        print(f"     {case}: {time.monotonic() - t0:.0f}s", flush=True)
    return 1 if failed else 0
