"""Spool files after a killed server job (issue 15, case 11), on a federation of processes from provisioned kits.

NVFlare's disk offload spools the sites' results under <TMPDIR>/nvflare_tensor_offload_<job id>_*/ and removes it
only when FedAvg.run() ends normally. The server's job process is killed mid-round (what the OOM killer does to the
process holding the model); the server itself lives on. The spool is left behind; the next job removes it at its
start, since that job no longer runs (app_code/fl_server/spool.py). The container start does the same for every
spool (docker/entrypoint.sh; tests/e2e/test_faults_compose.py)."""

import glob
import os
import signal
import time

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]


def job_process(job_id: str) -> int:
    """pid of the server's job process (NVFlare's runner_process for that job)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "runner_process" in cmd and job_id in cmd and "server" in cmd:
            return int(pid)
    raise AssertionError(f"no server job process for {job_id}")


def test_a_killed_jobs_spool_is_removed_when_the_next_job_starts(tmp_path, tiny_assets, figures):
    from fl_deploy import make_job

    spool_root = tmp_path / "server-tmp"
    spool_root.mkdir()
    fed = local_federation.ProcessFederation(str(tmp_path), SITES)
    fed.server_env = {"TMPDIR": str(spool_root)}

    def job(name, rounds):
        out = str(tmp_path / name)
        assert make_job.main(["--out", out, "--sites", ",".join(SITES), "--rounds", str(rounds),
                              "--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"],
                              "--max_steps", "10", "--batch_size", "4", "--eval_samples", "16",
                              "--round_timeout", "120"]) == 0
        return out

    fed.start()
    try:
        fed.wait_for_sites()
        killed_job = fed.nvflare("job", "submit", "-j", job("job-a", 5))["data"]["job_id"]
        deadline = time.monotonic() + 300
        while not glob.glob(str(spool_root / f"nvflare_tensor_offload_{killed_job}_*" / "nvflare_tensors_*")):
            assert time.monotonic() < deadline, f"no result was spooled: {os.listdir(spool_root)}"
            time.sleep(0.2)
        os.kill(job_process(killed_job), signal.SIGKILL)
        while not fed.nvflare("job", "meta", killed_job)["data"]["status"].startswith("FINISHED"):
            assert time.monotonic() < deadline + 300, "the server never noticed its job process died"
            time.sleep(2)
        left = glob.glob(str(spool_root / f"nvflare_tensor_offload_{killed_job}_*"))
        assert left, "NVFlare removed the killed job's spool itself: the fault this test keeps is gone"
        left_bytes = sum(os.path.getsize(os.path.join(d, f)) for s in left for d, _, fs in os.walk(s) for f in fs)
        next_job = fed.nvflare("job", "submit", "-j", job("job-b", 1))["data"]["job_id"]
        fed.nvflare("job", "wait", next_job, "--timeout", "600", timeout=660)
        status = fed.nvflare("job", "meta", next_job)["data"]["status"]
        result = fed.nvflare("job", "download", next_job, "-o", str(tmp_path / "dl"))["data"]["download_path"]
    finally:
        fed.stop()
    assert status == "FINISHED:COMPLETED"
    assert not [p for p in os.listdir(spool_root) if p.startswith("nvflare_tensor_offload_")], os.listdir(spool_root)
    assert not [p for p in os.listdir(spool_root) if p.startswith("fl-job-")], os.listdir(spool_root)
    with open(os.path.join(result, "workspace", "log.txt")) as f:
        assert f"removed the disk-offload spool of a job that no longer runs: {left[0]}" in f.read()
    figures(f"server job process killed after its first spooled result: its spool "
          f"({left_bytes / 1e6:.1f} MB) stayed until the next job started, which removed it")
