"""System metrics per round: what the sites and the server measure (round_meter.py, round_stats.py,
process_stats.py), and what scripts/export_results.py makes of them (system_metrics.csv, the round time and bytes
plot)."""

import csv
import os
import re

import pytest
import torch


class Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


class Trainer:
    """What round_meter reads of TRL's SFTTrainer: the running count of non-padding tokens trained."""

    def __init__(self):
        self._total_train_tokens = 1000

    def train(self, tokens):
        self._total_train_tokens += tokens


def test_peak_memory_is_per_round():
    from fl_common.process_stats import PeakMemory

    meter = PeakMemory(sample_s=0.01)
    meter.reset()
    block = bytearray(200 * 2**20)  # 200 MiB, touched
    for i in range(0, len(block), 4096):
        block[i] = 1
    high = meter.peak_bytes()
    del block
    meter.reset()
    low = meter.peak_bytes()
    meter.stop()
    assert high - low > 150 * 2**20, (high, low)


def test_payload_bytes_counts_tensor_bytes():
    import numpy as np

    from fl_common.process_stats import payload_bytes

    params = {"a": torch.zeros(10, 4), "b": torch.zeros(3, dtype=torch.bfloat16), "c": np.zeros(5), "d": "meta"}
    assert payload_bytes(params) == 10 * 4 * 4 + 3 * 2 + 5 * 8


def test_site_meter_writes_the_rounds_system_metrics():
    from fl_site.round_meter import RoundMeter

    writer, trainer = Writer(), Trainer()
    meter = RoundMeter(writer, gpu=None)
    received = {"w": torch.zeros(256, 256)}
    meter.round_started(4, received)
    with meter.training(trainer):
        trainer.train(5000)
    values = meter.round_done({"w": torch.zeros(256, 128, dtype=torch.bfloat16)})
    assert values["received_bytes"] == 256 * 256 * 4 and values["sent_bytes"] == 256 * 128 * 2
    assert values["train_tokens_per_s"] > 5000  # 5000 tokens in (much) less than a second
    assert values["peak_memory_bytes"] > 10 * 2**20 and values["round_time_s"] >= 0
    assert "gpu_peak_memory_bytes" not in values  # CPU: no GPU metrics
    assert {(tag, step) for tag, _, step in writer.scalars} == {
        ("system/received_bytes", 4), ("system/sent_bytes", 4), ("system/train_tokens_per_s", 4),
        ("system/peak_memory_bytes", 4), ("system/round_time_s", 4)}


def test_site_meter_on_a_gpu_adds_peak_gpu_memory_and_mean_utilisation(monkeypatch):
    """The GPU branch with torch.cuda's counters and the utilisation probe stubbed (this machine has no GPU)."""
    from fl_site import round_meter

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a, **k: 3 * 2**30)
    samples = iter([50.0, 70.0, 90.0])
    writer = Writer()
    meter = round_meter.RoundMeter(writer, gpu="GPU-1234", gpu_sample_s=0.01,
                                   utilization=lambda uuid: next(samples, None))
    meter.round_started(0, {})
    import time

    time.sleep(0.2)  # the sampler takes its three samples and stops at the probe's None
    values = meter.round_done({})
    assert values["gpu_peak_memory_bytes"] == 3 * 2**30
    assert values["gpu_utilization_percent"] == pytest.approx(70.0)
    assert "train_tokens_per_s" not in values  # no training in this round (exchange only)


def test_nvidia_smi_utilization_reads_one_gpu(monkeypatch, tmp_path):
    from fl_site import round_meter

    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$3" = "-i" ] && [ "$4" = "GPU-abc" ] && echo "37" || exit 1\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert round_meter.nvidia_smi_utilization("GPU-abc") == 37.0
    assert round_meter.nvidia_smi_utilization("GPU-other") is None


def test_server_round_summary_is_what_the_follower_parses():
    """round_stats.py writes the line, fl_deploy/admin/follow.py (which cannot import the job's code) parses it."""
    from fl_deploy.admin.follow import ROUND_SUMMARY
    from fl_server.round_stats import SUMMARY, summary_line

    assert SUMMARY.pattern == ROUND_SUMMARY.pattern
    line = summary_line(2, 5, 12.345, ["site-1", "site-10"], int(1.17 * 2**30))
    assert line == "round 2/5 done in 12.35 s: 2 results aggregated (site-1, site-10); server peak memory 1.17 GiB"
    assert ROUND_SUMMARY.search(line).groups() == ("2", "5", "12.35", "2", "site-1, site-10")
    assert ROUND_SUMMARY.search(summary_line(1, 1, 3, ["site-1"], 0)).group(4) == "1"


def test_server_round_stats_log_and_write_to_tensorboard(monkeypatch):
    from nvflare.apis.fl_component import FLComponent
    from nvflare.apis.fl_context import FLContext

    from fl_server.round_stats import RoundStats

    class Controller(FLComponent):
        def __init__(self):
            super().__init__()
            self.fl_ctx = FLContext()
            self.lines, self.events = [], []

        def info(self, msg):
            self.lines.append(msg)

        def fire_event(self, event_type, fl_ctx):
            from nvflare.apis.analytix import AnalyticsData
            from nvflare.apis.dxo import from_shareable
            from nvflare.apis.fl_constant import FLContextKey

            data = AnalyticsData.from_dxo(from_shareable(fl_ctx.get_prop(FLContextKey.EVENT_DATA)))
            self.events.append((event_type, data.tag, data.value, data.step))

    controller = Controller()
    stats = RoundStats(controller)
    assert stats.round_done(0, 3, []) == {}  # never started: nothing to report
    stats.round_started()
    stats.aggregated({"train_loss": 1.5, "note": "text"})
    values = stats.round_done(1, 3, ["site-1", "site-2"])
    assert set(values) == {"system/round_duration_s", "system/server_peak_memory_bytes", "global/train_loss"}
    assert re.fullmatch(r"round 2/3 done in [\d.]+ s: 2 results aggregated \(site-1, site-2\); server peak memory "
                        r"[\d.]+ GiB", controller.lines[-1])
    assert {(e[0], e[1], e[3]) for e in controller.events} == {
        ("analytix_log_stats", tag, 1) for tag in values}


def write_events(folder, scalars: dict):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(folder)
    for tag, series in scalars.items():
        for step, value in series.items():
            writer.add_scalar(tag, value, step)
    writer.close()


def test_export_writes_system_metrics_and_the_round_time_and_bytes_plot(tmp_path):
    from fl_deploy.export_results import metrics, plots

    ws = tmp_path / "workspace"
    write_events(str(ws / "tb_events" / "site-1"), {"system/round_time_s": {0: 2.0, 1: 3.0},
                                                    "system/received_bytes": {0: 5e5, 1: 5e5},
                                                    "system/sent_bytes": {0: 2.5e5, 1: 2.5e5},
                                                    "train_loss": {0: 5.0, 1: 4.0}})
    write_events(str(ws / "tb_events" / "gpt2-fl"), {"system/round_duration_s": {0: 4.0, 1: 5.0}})
    system = metrics.read_system_metrics(str(ws))
    assert system == {"gpt2-fl": {"round_duration_s": {0: 4.0, 1: 5.0}},
                      "site-1": {"round_time_s": {0: 2.0, 1: 3.0}, "received_bytes": {0: 5e5, 1: 5e5},
                                 "sent_bytes": {0: 2.5e5, 1: 2.5e5}}}
    metrics.write_system_csv(system, str(tmp_path / "system.csv"))
    with open(tmp_path / "system.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["round"], r["run"], r["metric"], float(r["value"])) for r in rows} >= {
        ("1", "site-1", "received_bytes", 5e5), ("2", "gpt2-fl", "round_duration_s", 5.0)}
    png = tmp_path / "plot.png"
    plots.plot_round_time_and_bytes(system, str(png), "job")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_runs_earlier_rounds_come_first_and_its_own_win(tmp_path):
    import json

    from fl_deploy.export_results import metrics

    def rec(rnd, loss):
        return json.dumps({"round": rnd, "aggregated_metrics": [{"name": "train_loss", "value": loss}],
                           "sites": [{"name": "site-1", "metrics": [{"name": "train_loss", "value": loss}]}]})

    (tmp_path / "workspace" / "metrics").mkdir(parents=True)
    (tmp_path / "workspace" / "metrics" / "round_metrics.jsonl").write_text(rec(2, 3.0) + "\n" + rec(3, 2.0) + "\n")
    (tmp_path / "earlier_rounds.jsonl").write_text(rec(0, 5.0) + "\n" + rec(1, 4.0) + "\n" + rec(2, 9.9) + "\n")
    rounds = metrics.read_run_metrics(str(tmp_path), str(tmp_path / "workspace"))
    assert [(r["round"], r["global"]["train_loss"]) for r in rounds] == [(0, 5.0), (1, 4.0), (2, 3.0), (3, 2.0)]
    rows = metrics.metric_rows(rounds)
    assert [r["round"] for r in rows if r["site"] == "global"] == [1, 2, 3, 4]
