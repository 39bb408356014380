"""The harness the compose e2e modules share (as Sentry self-hosted's _integration-test/ does): a stack of the
project's copy driven from outside like a user (Stack: docker compose, docker exec, the admin's nvflare CLI, the
server's saved rounds), submit_job.py run as a user runs it (Submission), and what a result holds."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from fl_deploy.harness.compose_stack import checkout_env
from fl_deploy.host import ADMIN_KIT


def base_image_env() -> dict:
    """FL_BASE_IMAGE for the stack's image build: CI's local base (FL_TEST_BASE_IMAGE), else the Dockerfile's."""
    return {"FL_BASE_IMAGE": os.environ["FL_TEST_BASE_IMAGE"]} if os.environ.get("FL_TEST_BASE_IMAGE") else {}


def compose_resources(project: str) -> dict:
    """The containers, networks and volumes Docker still holds for a compose project (its label)."""
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, cmd in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                      ("volumes", ["volume", "ls", "-q"])):
        found[kind] = subprocess.run(["docker", *cmd, "--filter", label], capture_output=True, text=True).stdout.split()
    return found


class Stack:
    def __init__(self, work: str, env: dict, project: str):
        self.work, self.env, self.project = work, env, project
        self.state = {}  # what one test leaves for the next (resume)

    def compose(self, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
        run = subprocess.run(["docker", "compose", *args], cwd=self.work, env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        assert not check or run.returncode == 0, f"docker compose {args}: {run.stderr[-2000:]}"
        return run

    def cid(self, service: str) -> str:
        out = self.compose("ps", "-aq", "--no-trunc", service).stdout.split()
        assert len(out) == 1, f"{service}: containers {out}"
        return out[0]

    @staticmethod
    def inspect(cid: str) -> dict:
        out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]

    @staticmethod
    def exec(cid: str, *cmd, check=True) -> subprocess.CompletedProcess:
        """docker exec (lighter than compose exec: for polls) as the container's user."""
        run = subprocess.run(["docker", "exec", cid, *cmd], capture_output=True, text=True, timeout=120)
        assert not check or run.returncode == 0, f"{cid[:12]} {cmd}: {run.stderr[-1000:]}"
        return run

    def nvflare(self, *args) -> dict:
        """nvflare CLI in the admin container, as fl_deploy.host.admin_nvflare runs it."""
        run = self.compose("exec", "-T", "admin", "nvflare", "--format", "json", *args, "--startup-kit", ADMIN_KIT,
                           check=False, timeout=120)
        lines = run.stdout.strip().splitlines()
        assert lines, f"nvflare {args}: {run.stderr[-1000:]}"
        return json.loads(lines[-1])

    def live_jobs(self) -> set:
        """The ids of the jobs the server's engine runs now (`nvflare system status`)."""
        return {j.get("job_id") for j in (self.nvflare("system", "status").get("data") or {}).get("jobs") or []}

    def abort_unfinished(self) -> list:
        """Abort every job not FINISHED (a failed test's leftovers), so the next test finds the sites free."""
        left = [j["job_id"] for j in self.nvflare("job", "list").get("data") or []
                if not str(j.get("status", "")).startswith("FINISHED")]
        for job_id in left:
            self.nvflare("job", "abort", job_id, "--force")
        return left

    def progress(self, job_id: str, poll=False):
        """checkpoints/<job_id>/progress.json on the server's volume, read as submit_job.py --resume reads it
        (docker compose exec), or with a plain docker exec when polling."""
        path = f"/workspace/checkpoints/{job_id}/progress.json"
        if poll:
            run = self.exec(self.cid("server") if poll is True else poll, "cat", path, check=False)
        else:
            run = self.compose("exec", "-T", "server", "cat", path, check=False, timeout=60)
        try:
            return json.loads(run.stdout) if run.returncode == 0 else None
        except json.JSONDecodeError:  # replaced atomically, but be safe
            return None

    def submit(self, *args) -> "Submission":
        return Submission([sys.executable, "scripts/submit_job.py", *args], self.work, self.env)

    def make_job(self, out: str, *args):
        run = subprocess.run([sys.executable, "scripts/make_job.py", "--out", out, *args], cwd=self.work,
                             capture_output=True, text=True, env=checkout_env(self.work))
        assert run.returncode == 0, run.stderr[-2000:]
        return out


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Submission:
    """scripts/submit_job.py run on the host like a user, its output read line by line as it comes."""

    def __init__(self, cmd: list, cwd: str, env: dict):
        # SIGINT at its default in the child, as a terminal's shell starts a command: a test runner started in the
        # background (`cmd &` without job control) ignores SIGINT, its children inherit that, and Python then never
        # turns Ctrl-C into KeyboardInterrupt (the CI run of ed5d46c, started that way, failed the Ctrl-C test so).
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=_sigint_default)
        self.lines = []  # (monotonic time, line)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float):
        """(time, match) of the first output line matching pattern."""
        deadline = time.monotonic() + timeout
        while True:
            for t, line in list(self.lines):
                if m := re.search(pattern, line):
                    return t, m
            assert self.proc.poll() is None or self._reader.is_alive(), \
                f"submit_job.py exited ({self.proc.returncode}) before {pattern!r}:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} after {timeout:.0f}s:\n{self.output[-3000:]}"
            time.sleep(0.5)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"submit_job.py still running after {timeout:.0f}s:\n{self.output[-3000:]}")
        self._reader.join(10)
        return rc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def job_id(self, timeout: float = 180) -> str:
        return self.wait_for(r"submitted job (\S+)", timeout)[1].group(1)

    def results(self, work: str) -> str:
        m = re.search(r"results:\s+(\S+)", self.output)
        assert m, self.output[-3000:]
        return os.path.join(work, m.group(1))


def read_rounds(result_dir: str) -> list:
    with open(os.path.join(result_dir, "workspace", "metrics", "round_metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def sites_of(r: dict) -> list:
    return sorted(s["name"] for s in r["sites"])


def global_eval_loss(r: dict) -> float:
    return {m["name"]: m["value"] for m in r["aggregated_metrics"]}["global_eval_loss"]
