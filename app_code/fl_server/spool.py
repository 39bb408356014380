"""The server's disk-offload spool: removed when the job that made it no longer runs.

With tensor disk offload (--transfer offload) NVFlare's FedAvg.run creates ``<TMPDIR>/nvflare_tensor_offload_<job
id>_<random>/`` and the sites' results land there (``nvflare_tensors_*``, one per result; NVFlare 2.9,
app_common/utils/tensor_disk_offload_context.py and app_opt/pt/tensor_downloader.py). It is removed only in
run()'s ``finally``: a job process that is killed (OOM killer, SIGKILL, the server container killed) leaves it for
good, up to sites x model bytes (the in-place mean keeps every result's spool until the round's end; in_place_mean.py).

So each job of this project holds an exclusive lock on ``<TMPDIR>/fl-job-<job id>.lock`` while it runs (the kernel
drops it when the process dies, however it dies), and at its start removes the spool of every job whose lock is free:
those jobs are no longer running. Spools without a lock file (jobs of other code) are left alone here; the
containers' entrypoint removes every spool at start, when no job can be running.
"""

import fcntl
import glob
import os
import shutil
import tempfile

SPOOL_PREFIX = "nvflare_tensor_offload_"  # NVFlare's: setup_tensor_disk_offload(job_id=...)
LOCK_PREFIX = "fl-job-"


def _size_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def hold(job_id: str, root: str = None):
    """Mark ``job_id`` as running until the returned file is closed (or the process dies)."""
    root = root or tempfile.gettempdir()
    lock = open(os.path.join(root, f"{LOCK_PREFIX}{job_id}.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def release(lock):
    """Close a lock from hold() and remove its file (the job ended normally; NVFlare removed its spool)."""
    path = lock.name
    lock.close()
    try:
        os.remove(path)
    except OSError:
        pass


def sweep(root: str = None) -> list:
    """Remove the spool of every job of this project that no longer runs; [(spool path, bytes freed)]."""
    root = root or tempfile.gettempdir()
    removed = []
    for lock_path in glob.glob(os.path.join(root, f"{LOCK_PREFIX}*.lock")):
        job_id = os.path.basename(lock_path)[len(LOCK_PREFIX):-len(".lock")]
        try:
            probe = open(lock_path, "a")
        except OSError:
            continue
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: that job runs
            probe.close()
            continue
        try:
            for spool in glob.glob(os.path.join(root, f"{SPOOL_PREFIX}{glob.escape(job_id)}_*")):
                size = _size_bytes(spool)
                shutil.rmtree(spool, ignore_errors=True)
                removed.append((spool, size))
            os.remove(lock_path)
        finally:
            probe.close()
    return removed
