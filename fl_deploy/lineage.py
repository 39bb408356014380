"""One training run across resumes: the results of a resumed job carry the rounds of the jobs it continues.

`scripts/submit_job.py --resume JOB` starts a new job from JOB's last saved global model; NVFlare records only the
new job's rounds. When the new job's result is downloaded (results/<new>/), this adds what came before, from the
earliest job of the run on:

  resumed_from.json          {"first_round": first round the new job ran (1-based), "jobs": [JOB, JOB's own
                             predecessor, ...]}
  earlier_rounds.jsonl       the earlier jobs' round records (NVFlare's round_metrics.jsonl lines) for the rounds
                             before first_round; scripts/export_results.py puts them before the job's own in
                             metrics.csv and the plots
  workspace/tb_events/<run>/earlier-<job>-<file>   the earlier jobs' TensorBoard event files, in the runs of the
                             same names: TensorBoard shows each site's whole run as one series

Where an earlier job's records come from: its downloaded result results/<job>/ (which holds its own earlier
rounds), or else its run folder on the server's volume (/workspace/<job>/: a job cut short by a server restart
keeps it), whose server configuration names the checkpoint it started from, and so its own predecessor. Host
side, standard library only.
"""

import io
import json
import os
import re
import shutil
import tarfile

from fl_deploy.host import compose

CHECKPOINT_JOB = re.compile(r"/checkpoints/([0-9a-fA-F-]{36})/")
ROUND_METRICS = os.path.join("metrics", "round_metrics.jsonl")
SERVER_CONFIG = os.path.join("app_server", "config", "config_fed_server.json")
EARLIER = "earlier_rounds.jsonl"
RESUMED_FROM = "resumed_from.json"
MAX_DEPTH = 20


def read_records(path: str) -> list:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("round"), int):
                out.append(rec)
    return out


def started_from(config_path: str):
    """The job id whose checkpoint a job's server configuration starts from (resume), or None."""
    try:
        with open(config_path) as f:
            text = f.read()
    except OSError:
        return None
    m = CHECKPOINT_JOB.search(text)
    return m.group(1) if m else None


def server_run_folder(job_id: str, dest: str, env_file=None) -> bool:
    """Copy metrics/, tb_events/ and app_server/config/ of the job's run folder on the server volume into dest."""
    run = compose("exec", "-T", "server", "sh", "-c",
                  f"cd /workspace/{job_id} 2>/dev/null && tar -c --ignore-failed-read metrics tb_events app_server/config "
                  "2>/dev/null", check=False, input=b"", env_file=env_file)
    data = run.stdout if isinstance(run.stdout, bytes) else b""
    if not data:
        return False
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return True


def earlier_job(job_id: str, results: str, scratch: str, env_file=None):
    """(workspace-like folder, its earlier_rounds.jsonl or None, its predecessor) of one earlier job, or None."""
    downloaded = os.path.join(results, job_id)
    if os.path.isdir(os.path.join(downloaded, "workspace")):
        ws = os.path.join(downloaded, "workspace")
        own_earlier = os.path.join(downloaded, EARLIER)
        return ws, own_earlier if os.path.isfile(own_earlier) else None, None
    ws = os.path.join(scratch, job_id)
    os.makedirs(ws, exist_ok=True)
    if server_run_folder(job_id, ws, env_file):
        return ws, None, started_from(os.path.join(ws, SERVER_CONFIG))
    return None


def add_earlier_rounds(dest: str, previous_job: str, first_round: int, results: str, env_file=None) -> list:
    """Give the downloaded result `dest` (a job that resumed `previous_job` at 1-based `first_round`) the earlier
    rounds of its run. Returns the earlier job ids found, newest first."""
    scratch = os.path.join(dest, ".earlier")
    records, jobs, job, limit = {}, [], previous_job, first_round - 1  # rounds 0..limit-1 (0-based) come from earlier
    try:
        while job and len(jobs) < MAX_DEPTH:
            found = earlier_job(job, results, scratch, env_file)
            if found is None:
                break
            ws, its_earlier, predecessor = found
            jobs.append(job)
            for rec in read_records(os.path.join(ws, ROUND_METRICS)) + read_records(its_earlier or ""):
                if rec["round"] < limit:
                    records.setdefault(rec["round"], rec)  # the newest job's record of a round wins
            copy_tb_events(os.path.join(ws, "tb_events"), os.path.join(dest, "workspace", "tb_events"), job)
            if its_earlier or not predecessor:
                break
            job = predecessor
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(os.path.join(dest, EARLIER), "w") as f:
        for rnd in sorted(records):
            f.write(json.dumps(records[rnd]) + "\n")
    with open(os.path.join(dest, RESUMED_FROM), "w") as f:
        json.dump({"first_round": first_round, "jobs": jobs}, f, indent=2)
    return jobs


def copy_tb_events(src: str, dst: str, job_id: str):
    """Each run's event files (including earlier copies they hold) into the run of the same name under dst."""
    if not os.path.isdir(src):
        return
    for run in os.listdir(src):
        folder = os.path.join(src, run)
        if not os.path.isdir(folder):
            continue
        os.makedirs(os.path.join(dst, run), exist_ok=True)
        for name in os.listdir(folder):
            target = name if name.startswith("earlier-") else f"earlier-{job_id}-{name}"
            if not os.path.exists(os.path.join(dst, run, target)):
                shutil.copy2(os.path.join(folder, name), os.path.join(dst, run, target))
