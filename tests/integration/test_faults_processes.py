"""Faults on a real federation (processes from provisioned kits): a site killed mid-round and restarted."""

import json
import os
import re
import signal
import time

import support
import torch

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
ROUNDS = 3
ROUND_TIMEOUT = 45  # generous: a site that misses it is dropped from the job, killed or not


def test_site_killed_mid_round_all_rounds_still_run(tmp_path, tiny_assets, figures):

    fed = local_federation.ProcessFederation(str(tmp_path), SITES)
    fed.start()
    try:
        fed.wait_for_sites()
        job = support.tiny_job(str(tmp_path / "job"), SITES, ROUNDS, tiny_assets,
                               "--round_timeout", str(ROUND_TIMEOUT), "--min_sites", "1",
                               "--part_mib", "0.03")  # row blocks through the shared download and disk offload
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.wait_for_site_log("site-2", job_id, "site-2: round 1 received")  # round 2 reached site-2
        killed = time.monotonic()
        os.killpg(fed.procs["site-2"].pid, signal.SIGKILL)  # mid-round: it has the task, not yet the result
        fed.procs["site-2"].wait()
        time.sleep(3)
        fed.restart("site-2")
        fed.nvflare("job", "wait", job_id, "--timeout", str(ROUNDS * ROUND_TIMEOUT + 240), timeout=900)
        ended_s = time.monotonic() - killed
        status = fed.nvflare("job", "meta", job_id)["data"]["status"]
        progress_file = os.path.join(fed.workspace("localhost"), "checkpoints", job_id, "progress.json")
        with open(progress_file) as f:
            progress = json.load(f)
        result = fed.nvflare("job", "download", job_id, "-o", str(tmp_path / "dl"))["data"]["download_path"]
    finally:
        fed.stop()

    # NVFlare marks the job ABNORMAL when a participant's job process was lost, even though every round ran.
    assert status in ("FINISHED:COMPLETED", "FINISHED:ABNORMAL"), status
    assert ended_s < ROUNDS * ROUND_TIMEOUT + 120  # bounded: at most a timeout per remaining round
    with open(os.path.join(result, "workspace", "metrics", "round_metrics.jsonl")) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    assert sorted(s["name"] for s in rounds[0]["sites"]) == SITES
    # From the round it was killed in (2nd, or 3rd if it slipped its result out first), site-2 is missing and
    # the rounds aggregate site-1 alone instead of waiting forever.
    first_missing = next(r["round"] for r in rounds if [s["name"] for s in r["sites"]] == ["site-1"])
    assert first_missing in (1, 2)
    assert all([s["name"] for s in r["sites"]] == ["site-1"] for r in rounds[first_missing:])
    with open(os.path.join(result, "workspace", "log.txt")) as f:
        server_log = f.read()
    assert (f"round {first_missing + 1}: 1 of 2 sites answered within {ROUND_TIMEOUT}s; no result from site-2"
            in server_log)
    # The default broadcast: each round's global model went to the sites from one shared download, both sites
    # in round 1, only site-1 once site-2 was lost; every round ended its download.
    served = re.findall(r"round (\d+): global model served to (\d+) sites from one shared download", server_log)
    assert [int(r) for r, _ in served] == list(range(1, ROUNDS + 1)), server_log[-3000:]
    assert served[0][1] == "2" and all(n == "1" for _, n in served[first_missing + 1:]), served
    # The default transfer: every result reached the aggregation as tensors spooled to disk.
    assert re.search(r"result from site-1: (\d+) of \1 tensors spooled to disk", server_log), server_log[-2000:]
    # Every completed round's global model is intact on the server's disk.
    assert progress["completed_round"] == ROUNDS - 1
    weights = torch.load(progress["checkpoint"], weights_only=True)["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())
    figures(f"site killed in round 2 of {ROUNDS}: job {status} {ended_s:.0f}s after the kill "
          f"(round timeout {ROUND_TIMEOUT}s); sites per round {[len(r['sites']) for r in rounds]}")
