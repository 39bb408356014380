"""Per-round accounting for the exchange benchmark: page faults and CPU seconds per process, phase times from
NVFlare's own log lines, steady-state medians (round 1's set-up excluded).

Sources:
  /proc/<pid>/stat   proc(5): field 10 minflt (minor faults), 14 utime, 15 stime (clock ticks, SC_CLK_TCK);
                     the comm field (2) may hold spaces and parentheses, so fields are counted after its last ')'.
  server job log     NVFlare 2.9.0's lines: "Round N started" (FedAvg banner), ServerRunner "sent task assignment",
                     "got result from client", "Start persist model on server" / "End persist model on server".
  site job log       Communicator "Received from server. getTask: ... time: S seconds" (the task with the global
                     model, download included) and "SubmitUpdate to: server. ... time: S seconds" (the result).
"""

import os
import re
import statistics
from datetime import datetime

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def parse_stat(text: str, ticks: int = CLOCK_TICKS) -> tuple:
    """(minor page faults, CPU seconds = utime + stime) from the text of one /proc/<pid>/stat."""
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return int(fields[10 - 3]), (int(fields[14 - 3]) + int(fields[15 - 3])) / ticks


def children(pid: int, proc: str = "/proc") -> list:
    """pid and its descendants, from /proc/<pid>/task/<tid>/children (Linux >= 3.5)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(os.path.join(proc, str(p), "task")):
                with open(os.path.join(proc, str(p), "task", tid, "children")) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


class TreeCounters:
    """Minor faults and CPU seconds of process trees, summed per participant; a process that exits keeps counting
    what it used (its last reading). Call it for {participant: (faults, cpu_s)} so far."""

    def __init__(self, roots: dict, proc: str = "/proc"):
        self.roots, self.proc = roots, proc  # participant -> root pid (a callable returning the pids also works)
        self.last = {}  # (participant, pid) -> (faults, cpu_s)

    def pids(self, root) -> list:
        return list(root()) if callable(root) else children(root, self.proc)

    def __call__(self) -> dict:
        for name, root in self.roots.items():
            for pid in self.pids(root):
                try:
                    with open(os.path.join(self.proc, str(pid), "stat")) as f:
                        self.last[(name, pid)] = parse_stat(f.read())
                except (OSError, ValueError):
                    continue
        out = {name: (0, 0.0) for name in self.roots}
        for (name, _), (faults, cpu) in self.last.items():
            out[name] = (out[name][0] + faults, out[name][1] + cpu)
        return out


def per_round(series: list, stamps: list) -> list:
    """Differences of a sampled cumulative counter [(time, value)] between consecutive round stamps (None where the
    samples do not cover a stamp)."""
    def at(t):
        before = [v for ts, v in series if ts <= t]
        return before[-1] if before else None

    out = []
    for a, b in zip(stamps, stamps[1:]):
        start, end = at(a), at(b)
        out.append(end - start if start is not None and end is not None else None)
    return out


def steady(values: list):
    """Median over the rounds after the first (round 1 carries the job's set-up); None when there are none."""
    rest = [v for v in values[1:] if v is not None]
    return statistics.median(rest) if rest else None


def _lines(log: str):
    """(time in s, message) of each header line of an NVFlare log; a continuation line keeps its header's time."""
    last = None
    for line in log.splitlines():
        m = _STAMP.match(line)
        if m:
            last = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if last is not None:
            yield last, line


SERVER_PHASES = ("send_s", "results_s", "aggregate_s", "persist_s", "round_s")


def server_phases(log: str) -> list:
    """One dict per round from a server job log: send_s (round start -> last task sent), results_s (-> last result
    received), aggregate_s (-> persist starts: the mean and the next global model), persist_s (the checkpoint),
    round_s (-> the next round's start or the end of FedAvg)."""
    rounds, cur = [], None
    for t, line in _lines(log):
        if re.search(r"Round \d+ started|Finished FedAvg", line):
            if cur is not None:
                rounds.append({**cur, "end": t})
            cur = {"start": t}
        elif cur is None:
            continue
        elif "sent task assignment" in line:
            cur["sent"] = t
        elif "got result from client" in line:
            cur["result"] = t
        elif "Start persist model" in line:
            cur["persist"] = t
        elif "End persist model" in line:
            cur["persisted"] = t

    def span(r, a, b):
        return round(r[b] - r[a], 3) if a in r and b in r else None

    return [{"send_s": span(r, "start", "sent"), "results_s": span(r, "sent", "result"),
             "aggregate_s": span(r, "result", "persist"), "persist_s": span(r, "persist", "persisted"),
             "round_s": span(r, "start", "end")}
            for r in rounds]


def site_phases(log: str) -> list:
    """One dict per task from a site job log: receive_s (the task and global model), send_s (the result), compute_s
    (ClientRunner's "got task assignment" -> "start to send task result": training and evaluation, no wire)."""
    received = [float(s) for s in re.findall(r"Received from server\. getTask: .* time: ([\d.]+) seconds", log)]
    sent = [float(s) for s in re.findall(r"SubmitUpdate to: server\. .* time: ([\d.]+) seconds", log)]
    got = [t for t, line in _lines(log) if "got task assignment" in line]
    done = [t for t, line in _lines(log) if "start to send task result" in line]
    compute = [round(b - a, 3) for a, b in zip(got, done)]
    return [{"receive_s": r, "send_s": s, "compute_s": compute[i] if i < len(compute) else None}
            for i, (r, s) in enumerate(zip(received, sent))]


def steady_phases(rows: list) -> dict:
    """{phase: median over rounds after the first} of server_phases' or site_phases' rows."""
    keys = rows[0].keys() if rows else ()
    return {k: steady([r[k] for r in rows]) for k in keys}


def cgroup_pids(cid: str):
    """A function returning the pids of a container's processes now (its cgroup's cgroup.procs, host pid space)."""
    from fl_deploy.harness import compose_stack

    path = os.path.join(compose_stack._cgroup_dir(cid), "cgroup.procs")

    def read() -> list:
        with open(path) as f:
            return [int(p) for p in f.read().split()]

    return read


def round_columns(counter_series: list, stamps: list, server_log: str, site_logs: list) -> dict:
    """The benchmark's per-round columns, each a median over the rounds after the first (steady):
    server_faults / server_cpu_s (the server's process tree or container) and site_faults / site_cpu_s (the median
    site) per round, from TreeCounters samples [(time, {participant: (faults, cpu_s)})]; server_<phase> from the
    server log; site_receive_s / site_send_s (median over the sites) from the site logs."""
    per = {}
    for name in sorted({n for _, sample in counter_series for n in sample}):
        per[name] = [steady(per_round([(t, s[name][i]) for t, s in counter_series if name in s], stamps))
                     for i in (0, 1)]
    sites = [v for n, v in per.items() if n != "server"]

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    server = per.get("server", (None, None))
    out = {"server_faults_per_round": server[0], "server_cpu_s_per_round": server[1],
           "site_faults_per_round": median(s[0] for s in sites), "site_cpu_s_per_round": median(s[1] for s in sites)}
    phases = steady_phases(server_phases(server_log))
    out.update({f"server_{k}": phases.get(k) for k in SERVER_PHASES})
    logs = [steady_phases(site_phases(log)) for log in site_logs]
    out.update({f"site_{k}": median(s.get(k) for s in logs) for k in ("receive_s", "send_s")})
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


STAGE_COLUMNS = ("server_faults_per_round", "site_faults_per_round", "server_cpu_s_per_round", "site_cpu_s_per_round",
                 *(f"server_{k}" for k in SERVER_PHASES), "site_receive_s", "site_send_s")


def scaling_lines(rows: list) -> list:
    """'server peak at N vs M sites' ratio per model and configuration (largest / smallest site count of the run),
    from the benchmark's rows (model, config, sites, server_peak_GiB); the target is within +-10 %."""
    lines = []
    for model, config in dict.fromkeys((r["model"], r["config"]) for r in rows):
        by_n = {r["sites"]: r["server_peak_GiB"] for r in rows if (r["model"], r["config"]) == (model, config)}
        lo, hi = min(by_n), max(by_n)
        if hi > lo and by_n[lo]:
            lines.append(f"{model} {config}: server peak at {hi} vs {lo} sites = {by_n[hi] / by_n[lo]:.2f} "
                         f"({by_n[hi]} / {by_n[lo]} GiB; target 0.90-1.10)")
    return lines
