"""Preflight sizing: the server's peak memory and spool disk, each site's memory and the round's exchange time,
predicted before a job is submitted from the model's size, the number of sites and the exchange mode; a job that
will not fit the server's free memory or disk is refused. Host side, standard library only.

The slopes are measured, not assumed: sizing_slopes.json (beside this module) holds them with the runs, dates and
commits they were fitted from; `benchmarks/fit_sizing.py` refits them (fit, below) from a container run of the
exchange benchmark (docs/benchmarks/exchange-pace.md). The model:

    exchange  = bytes one site sends per direction: the weights (x 0.5 in bf16 when stored in fp32), or with LoRA
                the adapter (rank r on c_attn: n_layer x 4 x n_embd x r fp32 values)
    server    = base + exchange x (per_model + per_site x sites)          (the server container's peak)
    site      = base + model x per_model                                    (each site container's peak)
    round_s   = intercept + s_per_gb_site x sites x exchange / 1e9          (exchange-only round, 2 cores)
                intercept: the geometric mean of tiny training jobs' measured exchange (intercept, below)
    spool     = sites x exchange + 2 x model     (disk offload writes every result; the checkpoint and its temporary
                copy: by construction, not fitted)
"""

import json
import os
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Optional

from fl_deploy import ROOT
from fl_deploy.host import HostError, setting

SLOPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sizing_slopes.json")
GIB = 2**30
SERVER_SERVICE = "server"
SERVER_WORKSPACE = "/workspace"  # the server container's workspace volume (compose.participants.yaml)


@dataclass
class Prediction:
    model_bytes: int
    exchange_bytes: int  # per site, per direction
    sites: int
    server_peak_bytes: int
    server_spool_bytes: int
    site_peak_bytes: int
    round_exchange_s: float

    def line(self) -> str:
        return (f"predicted (fl_deploy/submit_job/sizing.py): server peak {self.server_peak_bytes / GIB:.2f} GiB, "
                f"spool {self.server_spool_bytes / GIB:.2f} GiB, each site {self.site_peak_bytes / GIB:.2f} GiB, "
                f"exchange {self.round_exchange_s:.1f} s per round ({self.sites} sites x "
                f"{self.exchange_bytes / 1e6:.1f} MB each way)")


def load_slopes(path: Optional[str] = None) -> dict:
    """sizing_slopes.json (SLOPES) or the file at `path`."""
    with open(path or SLOPES) as f:
        return json.load(f)


def predict(model_bytes: int, exchange_bytes: int, sites: int, slopes: dict = None) -> Prediction:
    """The job's needs from its model size (bytes as stored), bytes exchanged per site and direction, sites."""
    s = slopes or load_slopes()
    server = s["server"]["base_bytes"] + exchange_bytes * (s["server"]["per_model"] + s["server"]["per_site"] * sites)
    site = s["site"]["base_bytes"] + model_bytes * s["site"]["per_model"]
    round_s = s["round"]["intercept_s"] + s["round"]["s_per_gb_site"] * sites * exchange_bytes / 1e9
    return Prediction(model_bytes, exchange_bytes, sites, int(server), int(sites * exchange_bytes + 2 * model_bytes),
                      int(site), round(round_s, 1))


def fit(rows: list, previous: dict) -> dict:
    """The slopes refit from benchmarks/exchange.py's CSV rows (csv.DictReader's dicts) of one model and one
    configuration at two or more site counts, on the containers (`--deployment compose`): the deployment the
    preflight predicts. Least squares, the module docstring's model:

        round  through previous["round"]["intercept_s"] (the tiny model's fixed latency, not in these rows):
               s_per_gb_site = sum x (y - intercept) / sum x^2, x = sites x exchange GB, y = round_s_median
        server the line of server_peak_GiB over sites: per_site = its slope / exchange, per_model = (its value at
               0 sites - previous base_bytes) / exchange
        site   per_model = median over rows of (site_peak_GiB_max - previous base_bytes) / model bytes

    Base bytes and the intercept are kept from `previous` (measured with the tiny model). Raises ValueError for rows
    of more than one model or configuration, or fewer than two site counts."""
    if len({(r["model"], r["config"]) for r in rows}) != 1 or len({int(r["sites"]) for r in rows}) < 2:
        raise ValueError("fit needs rows of one model and one configuration at two or more site counts, "
                         f"got {sorted({(r['model'], r['config'], int(r['sites'])) for r in rows})}")
    exchange = statistics.median(float(r["bytes_up_per_site"]) for r in rows)
    model = float(rows[0]["model_MB"]) * 1e6
    sites = [int(r["sites"]) for r in rows]
    c = previous["round"]["intercept_s"]
    xs = [n * exchange / 1e9 for n in sites]
    ys = [float(r["round_s_median"]) for r in rows]
    per_site_gib, at_zero_gib = statistics.linear_regression(sites, [float(r["server_peak_GiB"]) for r in rows])
    site_base = previous["site"]["base_bytes"]
    return {
        "round": {"intercept_s": c,
                  "s_per_gb_site": round(sum(x * (y - c) for x, y in zip(xs, ys)) / sum(x * x for x in xs), 2)},
        "server": {"base_bytes": previous["server"]["base_bytes"],
                   "per_model": round((at_zero_gib * GIB - previous["server"]["base_bytes"]) / exchange, 3),
                   "per_site": round(per_site_gib * GIB / exchange, 3)},
        "site": {"base_bytes": site_base, "per_model": round(statistics.median(
            (float(r["site_peak_GiB_max"]) * GIB - site_base) / model for r in rows), 3)},
    }


def intercept(measured_s: list) -> float:
    """The round's intercept in seconds from tiny training jobs' measured exchange (measured_exchange_s, one value
    per job): their geometric mean, the centre for a check judged by the ratio predicted / measured (the compose
    e2e test: within 2x). A tiny job's exchange is mostly the sites' wait for their next task request, which varies
    round to round. Raises ValueError for no values or a value <= 0."""
    if not measured_s or min(measured_s) <= 0:
        raise ValueError(f"the intercept needs measured exchange times > 0 s, got {measured_s}")
    return round(statistics.geometric_mean(measured_s), 2)


def refusal(p: Prediction, free_memory: int, free_disk: int) -> str:
    """One sentence naming the numbers and the fix when the server cannot hold the job, else None."""
    short = []
    if p.server_peak_bytes > free_memory:
        short.append(f"memory: {p.server_peak_bytes / GIB:.2f} GiB predicted at its peak, {free_memory / GIB:.2f} "
                     "GiB free")
    if p.server_spool_bytes > free_disk:
        short.append(f"disk: {p.server_spool_bytes / GIB:.2f} GiB of spool predicted, {free_disk / GIB:.2f} GiB "
                     f"free in its {SERVER_WORKSPACE}")
    if not short:
        return None
    return (f"the job will not fit the server ({'; '.join(short)}) for {p.sites} sites x "
            f"{p.exchange_bytes / 1e6:.0f} MB; nothing was submitted. Fix: fewer sites per round (--sites), a smaller "
            "exchange (--exchange_dtype bfloat16, or --lora true), or more "
            f"{'disk for the server-workspace volume' if p.server_spool_bytes > free_disk else 'memory'} "
            "(or FL_SKIP_SIZING=1 to submit anyway)")


def _flag(flags: list, name: str, env: str, default: str, env_file: str = None) -> str:
    """A make_job setting as the job will get it: its --flag (last wins), else FL_<NAME> in .env, else default."""
    value = setting(env, default, env_file)
    for i, f in enumerate(flags):
        if f == f"--{name}" and i + 1 < len(flags):
            value = flags[i + 1]
        elif f.startswith(f"--{name}="):
            value = f.split("=", 1)[1]
    return value


def model_facts(model: str, env_file: str = None) -> tuple:
    """(weight bytes, config.json) of a model folder readable from the host: a container path under /assets/ is
    the host's FL_ASSETS_DIR. (None, None) for a hub name or a folder the host cannot read."""
    if model.startswith("/assets/"):
        model = os.path.join(ROOT, setting("FL_ASSETS_DIR", "./assets", env_file), model[len("/assets/"):])
    if not os.path.isdir(model):
        return None, None
    files = os.listdir(model)
    weights = [f for f in files if f.endswith(".safetensors")] or [f for f in files if re.match(r".*\.bin$", f)]
    if not weights:
        return None, None
    config = {}
    if "config.json" in files:
        with open(os.path.join(model, "config.json")) as f:
            config = json.load(f)
    return sum(os.path.getsize(os.path.join(model, f)) for f in weights), config


def exchange_bytes(model_bytes: int, config: dict, dtype: str, lora: bool, lora_r: int) -> int:
    """Bytes one site sends per direction (module docstring)."""
    if lora:
        width, layers = config.get("n_embd") or config.get("hidden_size"), config.get("n_layer") or config.get(
            "num_hidden_layers")
        if width and layers:
            return layers * 4 * width * lora_r * 4
    stored = 2 if str(config.get("torch_dtype") or config.get("dtype") or "float32") in ("bfloat16", "float16") else 4
    return model_bytes // 2 if dtype in ("bfloat16", "bf16") and stored == 4 else model_bytes


def server_free(console) -> tuple:
    """(free memory, free disk in its workspace) of the server container, bytes: MemAvailable, or the container's
    cgroup limit minus its usage when that is lower; df of the workspace volume."""
    run = console.compose("exec", "-T", SERVER_SERVICE, "sh", "-c",
                          "grep MemAvailable /proc/meminfo; cat /sys/fs/cgroup/memory.max "
                          "/sys/fs/cgroup/memory.current 2>/dev/null; echo; "
                          f"df -Pk {SERVER_WORKSPACE} | tail -1", check=False)
    return parse_free(run.stdout or "")


def parse_free(text: str) -> tuple:
    """server_free's reading from its shell output (meminfo line, cgroup max / current, df -Pk line)."""
    m = re.search(r"MemAvailable:\s+(\d+) kB", text)
    lines = text.splitlines()
    memory = int(m.group(1)) * 1024 if m else None
    numbers = [ln.strip() for ln in lines[1:3]]
    if len(numbers) == 2 and all(n.isdigit() for n in numbers):  # cgroup v2 with a limit ("max" otherwise)
        memory = min(memory or 1 << 62, int(numbers[0]) - int(numbers[1]))
    df = [ln for ln in lines if re.match(r"\S+\s+\d+\s+\d+\s+\d+\s+\d+%", ln)]
    disk = int(df[-1].split()[3]) * 1024 if df else None
    return memory, disk


def check(console, sites: list, job_flags: list, job_folder: str = None) -> Prediction:
    """The preflight: predict, print the prediction, refuse (HostError) a job the server cannot hold. Returns the
    prediction, or None (with a note) where the model is not readable from the host or --job-folder was given."""
    env_file = console.env_file
    if job_folder or setting("FL_SKIP_SIZING", "", env_file) == "1":
        return None
    model = _flag(job_flags, "model", "FL_MODEL", "gpt2", env_file)
    model_bytes, config = model_facts(model, env_file)
    if model_bytes is None:
        print(f"sizing: {model} is not a folder the host can read (a hub name?): no prediction", flush=True)
        return None
    lora = _flag(job_flags, "lora", "FL_LORA", "false", env_file).lower() in ("1", "true", "yes")
    dtype = _flag(job_flags, "exchange_dtype", "FL_EXCHANGE_DTYPE", "float32", env_file)
    r = int(_flag(job_flags, "lora_r", "FL_LORA_R", "16", env_file))
    p = predict(model_bytes, exchange_bytes(model_bytes, config, dtype, lora, r), max(len(sites), 1))
    print(p.line(), flush=True)
    memory, disk = server_free(console)
    if memory is not None and disk is not None:
        reason = refusal(p, memory, disk)
        if reason:
            raise HostError(reason)
    return p


def measured_exchange_s(dest: str):
    """The round's exchange time a downloaded result shows, in seconds: per round, the server's round time (its log,
    workspace/log.txt) less the slowest site's compute time that round (got task -> result being sent, its log in
    site_logs/): what the round spent on the wire, the task polling and the aggregation; the median over the rounds
    after the first. None where a log is missing, there is one round only, or a site ran a different number of
    tasks than the server ran rounds (a site that missed a round: the rounds cannot be paired)."""
    from fl_deploy.round_stats import server_phases, site_phases, steady

    def read(path):
        with open(path, errors="replace") as f:
            return f.read()

    server_log = os.path.join(dest, "workspace", "log.txt")
    logs = os.path.join(dest, "site_logs")
    if not os.path.isfile(server_log) or not os.path.isdir(logs):
        return None
    rounds = [r["round_s"] for r in server_phases(read(server_log))]
    sites = [[t["compute_s"] for t in site_phases(read(os.path.join(logs, site, "log.txt")))]
             for site in sorted(os.listdir(logs)) if os.path.isfile(os.path.join(logs, site, "log.txt"))]
    if not sites or any(len(compute) != len(rounds) for compute in sites):
        return None
    per_round = [None if r is None or None in c else max(r - max(c), 0.0) for r, c in zip(rounds, zip(*sites))]
    exchange = steady(per_round)
    return None if exchange is None else round(exchange, 2)


def record(dest: str, p: Prediction):
    """results/<job_id>/sizing.json: the prediction beside the measured exchange time (measured_exchange_s).
    Returns the measured seconds (None: not measurable)."""
    if p is None or not dest:
        return None
    measured = measured_exchange_s(dest)
    with open(os.path.join(dest, "sizing.json"), "w") as f:
        json.dump({"predicted": asdict(p), "measured": {"round_exchange_s": measured},
                   "slopes": load_slopes()["source"]}, f, indent=2)
    return measured
