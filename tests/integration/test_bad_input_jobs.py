"""Bad input that only shows once a job runs, on a real federation (processes from provisioned kits):
a site's dataset missing and a corrupt initial checkpoint. Each must end the job in bounded time with a log line
that names the problem and the fix, readable from the admin (fl_deploy/admin/job_errors.py, as scripts/submit_job.py prints
it on a failed job), and leave the job store, the kits and earlier checkpoints as they were."""

import hashlib
import os
import subprocess
import time

import pytest

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
BOUND_S = 180  # both failures happen before the first round trains: a job that runs longer is hanging


def tree_digest(path: str, skip: str = None) -> str:
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs[:] = sorted(d for d in dirs if d != skip)
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(full.encode())
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("badjobs")
    with local_federation.ProcessFederation(str(root), SITES) as fed:
        yield fed


def run_job(fed, tiny_assets, tmp_path, *flags) -> dict:
    from fl_deploy import make_job

    job = str(tmp_path / "job")
    assert make_job.main(["--out", job, "--sites", ",".join(SITES), "--rounds", "2", "--model", tiny_assets["model"],
                          "--dataset", tiny_assets["dataset"], "--max_steps", "2", "--batch_size", "4",
                          "--eval_samples", "8", "--round_timeout", "60", *flags]) == 0
    kits = [os.path.join(fed.kits[name], "startup") for name in ["localhost", *SITES]]  # certificates, keys
    kits_before = [tree_digest(k) for k in kits]
    jobs_before = {j["job_id"] for j in fed.nvflare("job", "list")["data"]}
    start = time.monotonic()
    job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
    fed.nvflare("job", "wait", job_id, "--timeout", str(BOUND_S), timeout=BOUND_S + 60)
    elapsed = time.monotonic() - start
    status = fed.nvflare("job", "meta", job_id)["data"]["status"]
    dl = fed.nvflare("job", "download", job_id, "-o", str(tmp_path / "dl"))["data"]["download_path"]
    run = subprocess.run([os.path.join(local_federation.VENV_BIN, "python"), "-m", "fl_deploy.admin.job_errors", job_id,
                          "--startup-kit", fed.admin_kit, "-o", dl],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    logs = {site: "\n".join(l for l in lines if l.startswith(site + ": ")) for site in ["server", *SITES]}
    jobs_after = {j["job_id"] for j in fed.nvflare("job", "list")["data"]}
    assert jobs_after == jobs_before | {job_id}, "the job store lost or gained other jobs"
    assert [tree_digest(k) for k in kits] == kits_before, "the kits changed"
    return {"job_id": job_id, "status": status, "elapsed": elapsed, "messages": logs, "dl": dl}


def test_dataset_missing_at_the_sites(fed, tiny_assets, tmp_path, figures):
    missing = str(tmp_path / "no-such-imdb")
    r = run_job(fed, tiny_assets, tmp_path, "--dataset", missing)
    assert r["status"].startswith("FINISHED") and r["status"] != "FINISHED:COMPLETED", r["status"]
    assert r["elapsed"] < BOUND_S
    # Sent by each site to the server: the admin reads the cause without access to the site.
    for site in SITES:
        assert f"dataset path {missing!r} does not exist" in r["messages"][site], r["messages"]
        # Kept with the results: the site's error log, or, when that arrives after the download (a site sends it once
        # its job process has ended), its job log as streamed while the job ran (fl_deploy/admin/job_errors.py).
        kept = [os.path.join(r["dl"], "site_errors", f"{site}.txt"), os.path.join(r["dl"], "site_logs", site, "log.txt")]
        texts = [open(path, errors="replace").read() for path in kept if os.path.isfile(path)]
        assert any(f"dataset path {missing!r} does not exist" in t for t in texts), (site, kept)
    figures(f"dataset missing at both sites: job {r['status']} {r['elapsed']:.0f}s after submission")


def test_corrupt_initial_checkpoint(fed, tiny_assets, tmp_path, figures):
    ckpt = tmp_path / "FL_global_model.pt"
    ckpt.write_bytes(b"\x00not a checkpoint" * 64)  # e.g. a copy cut short by a full disk
    store = os.path.join(fed.workspace("localhost"), "checkpoints")
    before = tree_digest(store)
    r = run_job(fed, tiny_assets, tmp_path, "--initial_ckpt", str(ckpt), "--start_round", "1")
    assert r["status"].startswith("FINISHED") and r["status"] != "FINISHED:COMPLETED", r["status"]
    assert r["elapsed"] < BOUND_S
    server = r["messages"]["server"]
    assert f"initial checkpoint {ckpt} is corrupt or not a PyTorch checkpoint" in server, server[-3000:]
    assert "Resume from an intact FL_global_model.pt" in server
    # No round ran: nothing new was persisted and earlier jobs' checkpoints are untouched.
    assert "Round 1 started" not in server
    assert not os.path.exists(os.path.join(store, r["job_id"], "progress.json"))
    assert tree_digest(store, skip=r["job_id"]) == before
    figures(f"corrupt initial checkpoint: job {r['status']} {r['elapsed']:.0f}s after submission")


def test_site_local_data_missing_at_the_sites(fed, tiny_assets, tmp_path, figures):
    """--data_source site with no data folder at the sites (processes: FL_SITE_DATA_DIR unset, /data/site absent):
    the job stops at the sites' start with one sentence naming the site, the path it looked at and the fix."""
    from fl_site.site_data import DEFAULT_DIR, DIR_ENV

    if os.environ.get(DIR_ENV) or os.path.exists(DEFAULT_DIR):
        pytest.skip(f"this host has site data ({DIR_ENV} or {DEFAULT_DIR}): the sites would find it")
    r = run_job(fed, tiny_assets, tmp_path, "--data_source", "site")
    assert r["status"].startswith("FINISHED") and r["status"] != "FINISHED:COMPLETED", r["status"]
    assert r["elapsed"] < BOUND_S
    for site in SITES:
        said = r["messages"][site]
        assert f"{site}: its own data (--data_source site) at {DEFAULT_DIR} does not exist: put train.parquet" in said, \
            said[-2000:]
        assert "set FL_SITE_DATA in that host's .env" in said and "docker compose up -d" in said
    figures(f"site-local data missing at both sites: job {r['status']} {r['elapsed']:.0f}s after submission")
