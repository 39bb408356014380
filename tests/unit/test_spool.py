"""app_code/fl_server/spool.py: a job's disk-offload spool is removed once the job that made it no longer runs."""

import os
import subprocess
import sys

from fl_server import spool

HOLDER = "import sys, time; from fl_server import spool; lock = spool.hold(sys.argv[1], sys.argv[2]); print('held', " \
         "flush=True); time.sleep(600)"


def make_spool(root, job_id) -> str:
    path = root / f"{spool.SPOOL_PREFIX}{job_id}_abc123"
    (path / "nvflare_tensors_x").mkdir(parents=True)
    (path / "nvflare_tensors_x" / "part.safetensors").write_bytes(b"\0" * 1000)
    return str(path)


def test_the_spool_of_a_running_job_stays_and_of_a_dead_one_goes(tmp_path):
    running, dead = make_spool(tmp_path, "job-running"), make_spool(tmp_path, "job-dead")
    foreign = make_spool(tmp_path, "job-foreign")  # no lock file: not one of ours, left alone
    holders = {}
    for job_id in ("job-running", "job-dead"):
        holders[job_id] = subprocess.Popen([sys.executable, "-c", HOLDER, job_id, str(tmp_path)],
                                           stdout=subprocess.PIPE, text=True)
        assert holders[job_id].stdout.readline().strip() == "held"
    try:
        assert spool.sweep(str(tmp_path)) == []  # both run
        holders["job-dead"].kill()  # SIGKILL: no finally, no cleanup; the kernel drops its lock
        holders["job-dead"].wait()
        assert spool.sweep(str(tmp_path)) == [(dead, 1000)]
        assert os.path.isdir(running) and os.path.isdir(foreign) and not os.path.exists(dead)
        assert not os.path.exists(tmp_path / "fl-job-job-dead.lock")
    finally:
        for p in holders.values():
            p.kill()
            p.wait()


def test_a_job_that_ends_normally_leaves_no_lock(tmp_path):
    lock = spool.hold("job-1", str(tmp_path))
    spool.release(lock)
    assert os.listdir(tmp_path) == []
