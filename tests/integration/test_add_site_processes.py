"""A new site joins a running federation of provisioned kits (local processes): same root CA, nobody restarts."""

import json
import os

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]


def test_new_site_joins_running_federation(tmp_path, tiny_assets, figures):
    from fl_deploy import add_site
    from fl_deploy import make_job

    fed = local_federation.ProcessFederation(str(tmp_path), SITES)
    fed.start()
    try:
        fed.wait_for_sites()
        pids = {name: proc.pid for name, proc in fed.procs.items()}
        project = os.path.join(str(tmp_path), "project.yml")
        kit, _ = add_site.add_site(project, os.path.join(str(tmp_path), "ws"), "site-3", "test", service_uid=0)
        with open(os.path.join(kit, "startup", "rootCA.pem")) as new, \
                open(os.path.join(fed.kits["site-1"], "startup", "rootCA.pem")) as old:
            assert new.read() == old.read()
        fed.kits["site-3"] = kit
        fed.sites.append("site-3")
        fed.restart("site-3")
        joined_s = fed.wait_for_sites()
        for name, pid in pids.items():  # nobody else was restarted
            assert fed.procs[name].pid == pid and fed.procs[name].poll() is None, name

        job = os.path.join(str(tmp_path), "job")
        assert make_job.main(["--out", job, "--project", project, "--rounds", "1", "--model", tiny_assets["model"],
                              "--dataset", tiny_assets["dataset"], "--max_steps", "2", "--batch_size", "4",
                              "--eval_samples", "8"]) == 0
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.nvflare("job", "wait", job_id, "--timeout", "600", timeout=660)
        assert fed.nvflare("job", "meta", job_id)["data"]["status"] == "FINISHED:COMPLETED"
        result = fed.nvflare("job", "download", job_id, "-o", os.path.join(str(tmp_path), "dl"))["data"]
    finally:
        fed.stop()
    with open(os.path.join(result["download_path"], "workspace", "metrics", "round_metrics.jsonl")) as f:
        first = json.loads(f.readline())
    assert sorted(s["name"] for s in first["sites"]) == ["site-1", "site-2", "site-3"]
    figures(f"add site: site-3 registered {joined_s:.1f}s after its start")

