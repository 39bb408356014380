"""Slow case `volume-full` (scripts/check_slow_cases.py): the server's volume fills during a job.

A federation of processes from provisioned kits (two sites, the tiny model, round_timeout at its default 3600 s)
whose server workspace (checkpoints, the job's run folder, TMPDIR: the disk-offload spool) is a small tmpfs, the
stand-in for the server's volume. Once round 1's global model is saved, a file fills the tmpfs to a few MiB. PASS
when the job ends within --volume-full-s seconds of the fill, its server log names the full volume
(app_code/fl_server/disk_guard.py), and checkpoints/<job_id>/ still holds the last completed round's global model,
loadable, with progress.json pointing at it (what `submit_job.py --resume` starts from). Needs root (mount).
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

SIZE_MIB = 256
LEFT_MIB = 4  # what the fill leaves free


def fill(path: str, leave_bytes: int) -> int:
    """Write a file into ``path``'s filesystem until ``leave_bytes`` are free; returns the bytes written."""
    free = shutil.disk_usage(path).free - leave_bytes
    with open(os.path.join(path, "fill.bin"), "wb") as f:
        block = b"\0" * 2**20
        written = 0
        while written + len(block) <= free:
            f.write(block)
            written += len(block)
    return written


def volume_full(args) -> list:
    """[(passed, what, detail)]: one job whose server volume fills after round 1."""
    import torch

    from fl_deploy import make_tiny_assets
    from fl_deploy.harness import local_federation
    from fl_deploy import make_job

    work = tempfile.mkdtemp(prefix="volume-full-", dir=args.work)
    tiny = os.path.join(work, "tiny")
    assert make_tiny_assets.main(["--out", tiny]) == 0
    sites = ["site-1", "site-2"]
    fed = local_federation.ProcessFederation(work, sites, name="volfull")
    volume = fed.workspace("localhost")
    os.makedirs(volume, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", volume],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        return [(False, "", f"could not mount a {SIZE_MIB} MiB tmpfs as the server's volume (needs root): "
                            f"{mount.stderr.strip()}")]
    os.makedirs(os.path.join(volume, "tmp"))
    fed.server_env = {"TMPDIR": os.path.join(volume, "tmp")}
    fed.start()
    try:
        fed.wait_for_sites()
        job = os.path.join(work, "job")
        assert make_job.main(["--out", job, "--sites", ",".join(sites), "--rounds", "5",
                              "--model", os.path.join(tiny, "model"), "--dataset", os.path.join(tiny, "imdb"),
                              "--max_steps", "10", "--batch_size", "4", "--eval_samples", "16"]) == 0
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        progress_file = os.path.join(volume, "checkpoints", job_id, "progress.json")
        deadline = time.monotonic() + 600
        while not os.path.isfile(progress_file):
            if time.monotonic() > deadline:
                return [(False, "", "no round was saved in 600 s")]
            time.sleep(0.5)
        filled = fill(volume, LEFT_MIB * 2**20)
        t_fill, status = time.monotonic(), ""
        while not status.startswith("FINISHED") and time.monotonic() - t_fill < args.volume_full_s + 60:
            time.sleep(1)
            status = (fed.nvflare("job", "meta", job_id).get("data") or {}).get("status") or ""
        ended_s = time.monotonic() - t_fill
        with open(progress_file) as f:
            progress = json.load(f)
        model = torch.load(progress["checkpoint"], map_location="cpu", weights_only=False)
        os.remove(os.path.join(volume, "fill.bin"))
        got = fed.nvflare("job", "download", job_id, "-o", os.path.join(work, "dl"))
        log_path = os.path.join((got.get("data") or {}).get("download_path") or work, "workspace", "log.txt")
        log = open(log_path, errors="replace").read() if os.path.isfile(log_path) else ""
    finally:
        fed.stop()
        subprocess.run(["umount", "-l", volume], capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    named = next((line.split(" - ")[-1].strip() for line in log.splitlines() if "the server's volume is full" in line),
                 None)
    passed = status.startswith("FINISHED") and ended_s <= args.volume_full_s and named is not None and bool(model)
    return [(passed, f"{SIZE_MIB} MiB volume filled after round {progress['completed_round'] + 1}",
             f"{filled / 2**20:.0f} MiB written; job {status or 'still running'} {ended_s:.0f} s after the fill "
             f"(round_timeout 3600 s); server log: {named or 'no line names the full volume'}; kept: "
             f"checkpoint of round {progress['completed_round'] + 1} ({os.path.basename(progress['checkpoint'])}, "
             f"{'loads' if model else 'empty'})")]
