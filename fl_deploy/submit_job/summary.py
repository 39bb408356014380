"""What the user reads after a job: the results it wrote (summarize, naming only what exists), the rounds of the
whole run, and with --timeline where the job's start went. Host side, standard library only."""

import os

from fl_deploy import lineage
from fl_deploy.host import AdminConsole
from fl_deploy.submit_job.following import Reporter


def summarize(dest: str, report: Reporter):
    """What the result holds, naming only what exists."""
    ws = os.path.join(dest, "workspace")
    rounds = read_run_rounds(dest)
    for r in rounds:
        agg = {m["name"]: m["value"] for m in r.get("aggregated_metrics", [])}
        shown = ", ".join(f"{k}={agg[k]:.4f}" for k in ("train_loss", "global_eval_loss", "eval_loss") if k in agg)
        report.say(f"  round {r['round'] + 1}: {shown}")
    rel = os.path.relpath
    report.say(f"results:      {rel(dest)}")
    if os.path.isdir(os.path.join(dest, "global_model")):
        report.say(f"global model: {rel(os.path.join(dest, 'global_model'))} "
                   f"(AutoModelForCausalLM.from_pretrained; raw: workspace/app_server/FL_global_model.pt)")
    elif os.path.isfile(os.path.join(ws, "app_server", "FL_global_model.pt")):
        report.say(f"global model: {rel(os.path.join(ws, 'app_server', 'FL_global_model.pt'))} (raw state dict)")
    plots = sorted(os.listdir(os.path.join(dest, "plots"))) if os.path.isdir(os.path.join(dest, "plots")) else []
    if os.path.isfile(os.path.join(dest, "metrics.csv")):
        report.say(f"metrics:      {rel(os.path.join(dest, 'metrics.csv'))}"
                   + (f", {rel(os.path.join(dest, 'system_metrics.csv'))}"
                      if os.path.isfile(os.path.join(dest, "system_metrics.csv")) else ""))
    if plots:
        report.say(f"plots:        {rel(os.path.join(dest, 'plots'))}/ ({', '.join(plots)})")
    site_logs = os.path.join(dest, "site_logs")
    if os.path.isdir(site_logs) and os.listdir(site_logs):
        report.say(f"site logs:    {rel(site_logs)}/ ({', '.join(sorted(os.listdir(site_logs)))}); the server's: "
                   f"{rel(os.path.join(ws, 'log.txt'))}")
    if os.path.isdir(os.path.join(ws, "tb_events")):
        report.say("tensorboard:  docker compose --profile tensorboard up -d tensorboard  (http://127.0.0.1:6006)")


def read_run_rounds(dest: str) -> list:
    """Round records of the whole run: earlier rounds of a resumed run (lineage.py), then the job's own."""
    rounds = {r["round"]: r for r in lineage.read_records(os.path.join(dest, lineage.EARLIER))}
    rounds.update({r["round"]: r for r in lineage.read_records(os.path.join(dest, "workspace", lineage.ROUND_METRICS))})
    return [rounds[k] for k in sorted(rounds)]


def print_timeline(job_id: str, started: float, console: AdminConsole):
    """fl_deploy/timeline.py's report: submit -> job running -> site job processes up -> first step -> round 1."""
    from fl_deploy import timeline

    def site_log(site, job_id):  # a site running on this host: its job log in its container
        run = console.compose("exec", "-T", site, "cat", f"/workspace/{job_id}/log.txt", check=False)
        return run.stdout if run.returncode == 0 else None

    nvflare = lambda *cli: console.nvflare(*cli, check=False)  # noqa: E731
    print(timeline.report(job_id, timeline.collect(job_id, nvflare, started, site_log=site_log)), flush=True)
