"""Checks before a job is submitted, each refusing with one sentence that says what to do: the staged job is
complete (check_job.py's report), the sites it needs are connected, no other job holds them (one training job
at a time), and no participant's certificate ends before the job can (kit_expiry). Host side, standard library
only."""

import datetime
import json
import os
import time

from fl_deploy import ROOT, kit_expiry
from fl_deploy.host import AdminConsole, HostError
from fl_deploy.submit_job import sizing

SILENT_S = 45  # a site not heard from for this long is down (sites heartbeat every 10 s)
FETCHED_AT = "fetched_at"  # site_status(): when the server's answer came


def check_report(line: str) -> dict:
    """check_job.py --json's report ({"sites": [...], "problems": [...]}) from its output line, else None."""
    try:
        report = json.loads(line)
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) and "problems" in report else None


def check_staged_job(report: dict) -> dict:
    """The staged job's needs ({"sites", "all_sites", "min_sites"}), from check_job.py's report (files and
    imports, checked in the admin container: the sites' image); stops when it found problems."""
    if report["problems"]:
        raise HostError("the job is incomplete, nothing was submitted:\n  " + "\n  ".join(report["problems"])
                        + "\n  fix: regenerate it (scripts/make_job.py) or restore the missing files")
    return {k: report.get(k) for k in ("sites", "all_sites", "min_sites", "rounds")}


def site_status(console: AdminConsole) -> dict:
    """`nvflare system status`: the sites the server lists, with when it last heard from each; FETCHED_AT: when
    the answer came (time.time()), what require_sites measures silence against, however long it waits to."""
    status = console.nvflare("system", "status")
    return {**status, FETCHED_AT: time.time()} if isinstance(status, dict) else status


def require_sites(needs: dict, console: AdminConsole, status: dict = None) -> list:
    """Refuse a job the connected sites cannot run: a site it names is not connected (NVFlare would hold it,
    unscheduled), or, deployed to every connected site (@ALL), fewer than its min_clients are connected or one is
    connected that its client's site list leaves without a shard. Returns the sites the job will run on. status:
    site_status() fetched already (main() asks for it while the job is generated), else fetched here."""
    sites = list(needs.get("sites") or [])
    status = status if status is not None else site_status(console)
    # The server lists a lost site for 10 minutes (its heartbeat timeout); a live one heartbeats every 10 s.
    # Against the answer's time, not this one: the job may have been generated for a minute after it came.
    now = status.get(FETCHED_AT) or time.time()
    connected = sorted(c.get("client_name") for c in (status.get("data") or {}).get("clients") or []
                       if now - float(c.get("client_last_conn_time") or now) < SILENT_S)
    missing = [s for s in sites if s not in connected]
    if missing:
        raise HostError(
            f"the job needs {', '.join(sites)} but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not connected to the server "
            f"(connected: {', '.join(connected) or 'none'}); nothing was submitted. Start "
            f"{'it' if len(missing) == 1 else 'them'} (one host: docker compose up -d {' '.join(missing)}; another "
            "host: docker compose up -d in its bundle) and check its log (docker compose logs SITE), "
            "or generate the job for the connected sites only (scripts/make_job.py --sites ...)")
    if not needs.get("all_sites"):
        return sites
    extra = [s for s in connected if sites and s not in sites]
    if extra:
        raise HostError(
            f"the job deploys to every connected site (@ALL) but its client takes the site list {','.join(sites)} "
            f"(--sites in its task_script_args), so {', '.join(extra)} would get no data shard; nothing was "
            f"submitted. Generate the job for the connected sites (--sites {','.join(connected)}) or stop "
            f"{' '.join(extra)} (docker compose stop {' '.join(extra)})")
    need = max(int(needs.get("min_sites") or 0), 1)
    if len(connected) < need:
        raise HostError(
            f"the job deploys to every connected site (@ALL) and needs at least {need} (min_clients in its "
            f"meta.json) but {len(connected)} {'is' if len(connected) == 1 else 'are'} connected "
            f"({', '.join(connected) or 'none'}); nothing was submitted. Start more sites (docker compose up -d "
            "SITE) or lower min_clients")
    print(f"the job deploys to every connected site (@ALL): {', '.join(connected)}", flush=True)
    return connected


def live_jobs(console: AdminConsole) -> set:
    """Jobs the server runs now (`nvflare system status`), as opposed to what its job store says."""
    status = console.nvflare("system", "status", check=False)
    return {j.get("job_id") for j in ((status.get("data") or {}).get("jobs") or [])}


def require_free_sites(sites: list, console: AdminConsole):
    """One training job at a time on the same sites: refuse while another job holds any of them."""
    run = console.exec("python3", "-m", "fl_deploy.admin.job_queue", "--startup-kit", console.kit,
                       "--sites", ",".join(sites), check=False)
    try:
        holders = json.loads(run.stdout.strip().splitlines()[-1])["holders"]
    except (IndexError, KeyError, json.JSONDecodeError):
        raise HostError(f"could not ask the server which jobs run: {(run.stderr or run.stdout).strip()[-500:]}")
    if holders:
        h = holders[0]
        others = f" (and {len(holders) - 1} more job{'s' if len(holders) > 2 else ''})" if len(holders) > 1 else ""
        raise HostError(
            f"job {h['job_id']} ({h['name']}, {h['status']}, submitted {h['submit_time']}) holds "
            f"{', '.join(h['sites'])}{others}; nothing was submitted. Wait for it to finish, abort it "
            f"(docker compose exec {console.service} nvflare job abort {h['job_id']} --startup-kit {console.kit}), "
            "or pass --allow-concurrent to put it in the server's queue behind that job (it starts when that job ends)")


def require_valid_kits(sites: list, rounds: int, round_s: float = None, kits_dir: str = None, now=None) -> list:
    """Warn about every kit of the job's participants (the server, its sites, the admins) whose certificate or root
    CA ends within 30 days; refuse a job that would outlive one. The job's end is estimated as now + rounds x
    round_s: the round predicted by sizing.py (its exchange only), else the measured fixed latency of a round
    (sizing_slopes.json's intercept). Training comes on top, so the estimate is a lower bound and a refusal is never
    wrong; a job that may still outlive a certificate is what the 30-day warning is for. Prints when the first kit
    ends; returns the kits' expiry lines."""
    kits_dir = kits_dir or os.path.join(ROOT, "workspace", "kits")
    kits = kit_expiry.find_kits(kits_dir)
    if not kits:
        print(f"kit expiry: no kits in {kits_dir} to check", flush=True)
        return []
    other_sites = {os.path.basename(k) for k in kits if os.path.isfile(os.path.join(k, "startup", "fed_client.json"))
                   and os.path.basename(k) not in sites}
    now = now or datetime.datetime.now(kit_expiry.UTC)
    round_s = round_s or sizing.load_slopes()["round"]["intercept_s"]
    until = now + datetime.timedelta(seconds=max(rounds or 1, 1) * round_s)
    names = [os.path.basename(k) for k in kits if os.path.basename(k) not in other_sites]
    kits = kit_expiry.report(kits_dir, now, until, names)
    for line in kits.soon:
        print(f"warning: kit {line}", flush=True)
    if kits.problems:
        raise HostError(f"{kits.problems[0]} (nothing was submitted)")
    if kits.first_end:
        print(f"kits: {len(kits.lines)} valid until {kit_expiry.when(kits.first_end[1])} at least (the first to end: "
              f"{kits.first_end[0]}'s)", flush=True)
    return kits.lines
