"""The server's volume filling during a job (app_code/fl_server/disk_guard.py): the round that does not fit is not
started, a volume that fills while the job runs ends it within seconds, each time with a reason that names the
volume, the free and needed bytes and the resume; the host side names it from the job's log (disk_usage.py)."""

import threading
import time
from collections import namedtuple

import pytest
import torch

from fl_server import disk_guard

Usage = namedtuple("Usage", "total used free")
MiB = 2**20


def free(n_bytes):
    return lambda path: Usage(0, 0, n_bytes)


def test_a_round_needs_each_sites_result_and_one_global_model():
    params = {"w": torch.zeros(1024, 256), "b": torch.zeros(256, dtype=torch.bfloat16)}
    assert disk_guard.model_bytes(params) == 4 * (1024 * 256 + 256)  # float32 on the server, whatever it holds
    assert disk_guard.round_need(params, sites=4) == 5 * disk_guard.model_bytes(params)


def test_the_reason_names_the_volume_the_bytes_and_the_resume():
    assert disk_guard.shortage("/workspace/tmp", 100 * MiB, free(200 * MiB)) is None
    reason = disk_guard.shortage("/workspace/tmp", 100 * MiB, free(150 * MiB))
    assert reason.startswith("the server's volume is full: 150 MiB free on /workspace/tmp, 164 MiB needed")
    assert "global model of the last completed round stays in checkpoints/" in reason
    assert "submit_job.py --resume" in reason and "disk_usage.py --prune" in reason


def test_a_volume_that_fills_while_the_job_runs_ends_it_within_seconds():
    space = {"free": 10 * 2**30}
    ended = []
    got = threading.Event()
    watch = disk_guard.Watch("/workspace/tmp", lambda r: (ended.append(r), got.set()), interval=0.05,
                             disk_usage=lambda p: Usage(0, 0, space["free"])).start()
    time.sleep(0.2)
    assert not ended
    t0 = time.monotonic()
    space["free"] = 10 * MiB  # something else filled the volume
    assert got.wait(5)
    watch.stop()
    assert time.monotonic() - t0 < 1 and len(ended) == 1 and ended[0].startswith("the server's volume is full")


def test_the_workflow_does_not_start_a_round_that_does_not_fit(controller, monkeypatch):
    from nvflare.app_common.abstract.fl_model import FLModel

    panics = []
    controller.panic = panics.append
    monkeypatch.setattr(disk_guard.shutil, "disk_usage", free(1 * MiB))
    model = FLModel(params={"w": torch.zeros(4096, 1024)})  # 16 MiB: 48 MiB for the round + the floor
    with pytest.raises(RuntimeError, match="the server's volume is full: 1 MiB free"):
        controller.send_model(data=model, targets=["site-1", "site-2"], callback=lambda r: True)
    assert len(panics) == 1 and controller.sent == []  # nothing went out
    monkeypatch.setattr(disk_guard.shutil, "disk_usage", free(2**30))
    controller.send_model(data=model, targets=["site-1", "site-2"], callback=lambda r: True)
    assert len(controller.sent) == 1
