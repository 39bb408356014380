"""Why did a job end abnormally, as far as the server and Docker know, and what to do next. Host side, standard
library only (scripts/submit_job.py).

  * the server's job process: its exit code as the server's parent process logged it ("Job: <id> child process
    exit with return code N" in the server's log.txt); negative = ended by that signal (-9, SIGKILL: what the
    kernel's OOM killer sends, and `kill -9`). NVFlare 2.9's process launcher maps every code it does not know,
    -9 included, to 1 (EXECUTION_ERROR; app_common/job_launcher/process_launcher.py), so a non-zero code is read
    together with the job's own log: the job's runner writes "Server runner finished." on every orderly end,
    normal or failed (server_runner.py, in a finally), and a process that is killed never does;
  * Docker's events for the compose project's containers while the job ran (`docker events`): "oom" (the kernel
    killed a process in that container for lack of memory: the container's memory cgroup counted an OOM kill,
    whichever process it was), "die" with the exit code of the container's main process, "restart";
  * the next step: continue from the last global model the server saved (checkpoints/<job_id>/progress.json on
    its volume, written after every round) or, when no round was saved, fix the cause and submit again.
"""

import json
import re
import signal
import subprocess

from fl_deploy.host import compose

EXIT_LINE = "child process exit with return code"
RUNNER_FINISHED = "Server runner finished."  # NVFlare's ServerRunner.run(), in its finally


def signal_name(return_code: int) -> str:
    """'-9' -> 'SIGKILL'; '' for a plain exit code."""
    if return_code >= 0:
        return ""
    try:
        return signal.Signals(-return_code).name
    except ValueError:
        return f"signal {-return_code}"


def job_process_exit(job_id: str, env_file=None):
    """The server job process's return code as the server logged it, or None (exited 0, or not logged)."""
    run = compose("exec", "-T", "server", "grep", "-h", f"Job: {job_id} {EXIT_LINE}", "/workspace/log.txt",
                  check=False, env_file=env_file)
    codes = re.findall(rf"{EXIT_LINE} (-?\d+)", run.stdout or "")
    return int(codes[-1]) if codes else None


def job_runner_finished(job_log: str):
    """Whether the server's job log holds its runner's last line: True, False, or None when there is no such file.
    job_log: the log.txt of the downloaded job's workspace (the run folder leaves the server once the job ends)."""
    try:
        with open(job_log, errors="replace") as f:
            return any(RUNNER_FINISHED in line for line in f)
    except OSError:
        return None


def project_name(env_file=None) -> str:
    run = compose("config", "--format", "json", check=False, env_file=env_file)
    try:
        return json.loads(run.stdout)["name"]
    except (ValueError, KeyError, TypeError):
        return ""


def parse_events(text: str) -> list:
    """`docker events --format '{{json .}}'` lines -> [{"time", "service", "action", "exit_code"}]."""
    events = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        attrs = (e.get("Actor") or {}).get("Attributes") or {}
        events.append({"time": float(e.get("timeNano", 0)) / 1e9 or float(e.get("time", 0)),
                       "service": attrs.get("com.docker.compose.service") or attrs.get("name", "?"),
                       "action": e.get("Action") or e.get("status", ""), "exit_code": attrs.get("exitCode")})
    return events


def docker_events(project: str, since: float, until: float) -> list:
    """The oom / die / restart events of the project's containers between two times (seconds since the epoch)."""
    if not project:
        return []
    cmd = ["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--format", "{{json .}}",
           "--filter", "type=container", "--filter", f"label=com.docker.compose.project={project}"]
    for action in ("oom", "die", "restart"):
        cmd += ["--filter", f"event={action}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return parse_events(run.stdout) if run.returncode == 0 else []


def describe(return_code, events: list, runner_finished=None) -> list:
    """One sentence per fact, the most telling first. return_code: job_process_exit(); runner_finished:
    job_runner_finished() (False: the job's log stops before its runner's last line)."""
    import time

    facts = []
    if return_code is not None:
        sig = signal_name(return_code)
        if not sig and runner_finished is False:
            facts.append(f"the server's job process was killed: it ended (NVFlare records exit code {return_code}) "
                         f"before its runner's last log line ('{RUNNER_FINISHED}'), which every orderly end writes: "
                         "SIGKILL (the kernel's OOM killer, or kill -9) or a crash of the interpreter")
        else:
            facts.append(f"the server's job process ended with {'signal ' + sig if sig else f'exit code {return_code}'}"
                         + (" (SIGKILL: the kernel's OOM killer, or kill -9)" if return_code == -9 else ""))
    for e in events:
        at = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        if e["action"] == "oom":
            facts.append(f"Docker recorded an out-of-memory kill in the {e['service']} container at {at}: the kernel "
                         f"killed a process there for lack of memory (raise the host's or the container's memory, "
                         f"or use a smaller model / batch)")
        elif e["action"] == "die":
            facts.append(f"the {e['service']} container stopped at {at} (exit code {e['exit_code']})")
        elif e["action"] == "restart":
            facts.append(f"Docker restarted the {e['service']} container at {at}")
    return facts


def next_step(job_id: str, rounds_saved) -> str:
    if rounds_saved:
        return (f"the server saved the global model after round {rounds_saved}: once the cause is fixed, continue "
                f"from there with: python3 scripts/submit_job.py --resume {job_id}")
    return "no round was saved: fix the cause, then submit the job again (python3 scripts/submit_job.py)"
