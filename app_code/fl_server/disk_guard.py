"""The server's volume filling up during a job: named within seconds, the job ended, the last good global model kept.

A round needs free disk on the server's volume (its TMPDIR, /workspace/tmp in the containers) for the sites'
results (the disk-offload spool: up to sites x model bytes in float32) and one more global model (the checkpoint,
written next to the previous one, then renamed over it: persistor.py). When the volume is full, NVFlare's writes fail
deep in its streaming code and the round waits for its timeout (default 3600 s), as if a site were silent.

So the workflow (fedavg.py) checks before each round that the round fits, and a watch thread checks the free space
every CHECK_S seconds while the job runs: below FLOOR_BYTES (something else filled the volume) or not enough for
the round, the job ends at once with a reason that names the volume, its free and needed bytes, and what to do.
The global model of the last completed round stays on the volume (checkpoints/<job_id>/, never overwritten in
place), so `submit_job.py --resume JOB_ID` continues from it once space is freed.
"""

import shutil
import threading

CHECK_S = 2.0
FLOOR_BYTES = 64 * 2**20  # below this the volume is full for any purpose (logs, the job store, the checkpoint)
MARKER = "the server's volume is full"  # fl_deploy/disk_usage.py finds the reason by it in the job's log


def model_bytes(params: dict) -> int:
    """The model's float32 size in bytes: what one site result and one checkpoint take (4 bytes per element)."""
    total = 0
    for v in (params or {}).values():
        numel = getattr(v, "numel", None)
        total += 4 * int(numel()) if callable(numel) else 0
    return total


def round_need(params: dict, sites: int) -> int:
    """Bytes a round writes on the server's volume: each site's result spooled, then one global model (float32)."""
    return (sites + 1) * model_bytes(params)


def shortage(path: str, need: int, disk_usage=None):
    """None when ``path``'s filesystem has ``need`` + FLOOR_BYTES bytes free, else the reason (one sentence)."""
    free = (disk_usage or shutil.disk_usage)(path).free
    if free >= need + FLOOR_BYTES:
        return None
    return (f"{MARKER}: {free / 2**20:.0f} MiB free on {path}, {(need + FLOOR_BYTES) / 2**20:.0f} MiB needed "
            f"(the round's results and one global model, or a floor of {FLOOR_BYTES // 2**20} MiB while the round "
            f"runs); the job stops, the global model of the last completed "
            f"round stays in checkpoints/. Free space (python3 scripts/disk_usage.py --prune; docker compose exec "
            f"server df -h /workspace), then continue with: python3 scripts/submit_job.py --resume <job_id>")


class Watch:
    """Calls on_full(reason) once, from a daemon thread, when ``path``'s free space drops below FLOOR_BYTES (the
    round's own spool may use the rest: shortage() checked before the round that it fits)."""

    def __init__(self, path: str, on_full, interval: float = CHECK_S, disk_usage=None):
        self.path, self.on_full, self.interval, self.disk_usage = path, on_full, interval, disk_usage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk_guard", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                reason = shortage(self.path, 0, self.disk_usage)
            except OSError:
                continue
            if reason:
                self._stop.set()
                self.on_full(reason)
