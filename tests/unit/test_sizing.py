"""Preflight sizing (fl_deploy/submit_job/sizing.py) with stand-in slopes, server readings and model folders."""

import json

import pytest

from fl_deploy.host import HostError
from fl_deploy.submit_job import sizing

GIB = 2**30
SLOPES = {"round": {"intercept_s": 1.0, "s_per_gb_site": 10.0},
          "server": {"base_bytes": GIB, "per_model": 1.0, "per_site": 0.25},
          "site": {"base_bytes": GIB, "per_model": 3.0}}


def test_prediction_follows_the_slopes():
    p = sizing.predict(model_bytes=2 * 10**9, exchange_bytes=10**9, sites=4, slopes=SLOPES)
    assert p.server_peak_bytes == GIB + 2 * 10**9  # base + exchange x (1 + 0.25 x 4)
    assert p.site_peak_bytes == GIB + 6 * 10**9
    assert p.server_spool_bytes == 4 * 10**9 + 4 * 10**9  # 4 results + checkpoint and its temporary copy
    assert p.round_exchange_s == 41.0


def test_an_oversized_job_is_refused_in_one_sentence_with_numbers_and_fix():
    p = sizing.predict(model_bytes=3 * 10**9, exchange_bytes=3 * 10**9, sites=8, slopes=SLOPES)
    reason = sizing.refusal(p, free_memory=4 * GIB, free_disk=10 * GIB)
    assert reason.count(". ") == 1 and "nothing was submitted" in reason
    assert "memory: 9.38 GiB predicted at its peak, 4.00 GiB free" in reason
    assert "disk: 27.94 GiB of spool predicted, 10.00 GiB free" in reason
    assert "fewer sites per round" in reason and "bfloat16" in reason and "--lora true" in reason
    assert sizing.refusal(p, free_memory=16 * GIB, free_disk=64 * GIB) is None


def test_exchange_bytes_by_mode():
    cfg = {"n_embd": 768, "n_layer": 12, "torch_dtype": "float32"}
    assert sizing.exchange_bytes(500, cfg, "float32", False, 16) == 500
    assert sizing.exchange_bytes(500, cfg, "bfloat16", False, 16) == 250
    assert sizing.exchange_bytes(500, {**cfg, "torch_dtype": "bfloat16"}, "bfloat16", False, 16) == 500
    assert sizing.exchange_bytes(500, cfg, "float32", True, 16) == 12 * 4 * 768 * 16 * 4


def test_server_readings_from_meminfo_cgroup_and_df():
    text = ("MemAvailable:   8000000 kB\n2147483648\n1073741824\n\n"
            "overlay 100000000 40000000 60000000 40% /workspace\n")
    assert sizing.parse_free(text) == (GIB, 60000000 * 1024)
    assert sizing.parse_free("MemAvailable:   1000 kB\nmax\n5\n\n/dev/x 10 5 5 50% /workspace\n") == (1024000, 5120)


class Console:
    env_file = None

    def __init__(self, out):
        self.out = out

    def compose(self, *args, **kwargs):
        return type("Run", (), {"stdout": self.out})()


def test_check_refuses_a_job_the_server_cannot_hold(tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    (model / "config.json").write_text(json.dumps({"n_embd": 8, "n_layer": 2}))
    monkeypatch.setattr(sizing, "load_slopes", lambda path=None: SLOPES)
    monkeypatch.delenv("FL_SKIP_SIZING", raising=False)
    small = Console("MemAvailable:   100 kB\n\n/dev/x 10 5 5 50% /workspace\n")  # 100 KiB free memory
    with pytest.raises(HostError, match=r"will not fit the server \(memory: 1\.00 GiB predicted"):
        sizing.check(small, ["site-1", "site-2"], ["--model", str(model)])
    big = Console(f"MemAvailable:   {64 * 2**20} kB\n\n/dev/x 10 5 {2**30} 50% /workspace\n")
    p = sizing.check(big, ["site-1", "site-2"], ["--model", str(model), "--exchange_dtype", "bfloat16"])
    assert (p.model_bytes, p.exchange_bytes, p.sites) == (4096, 2048, 2)
    assert sizing.check(big, ["site-1"], ["--model", "gpt2"]) is None  # a hub name: nothing to size


def test_record_keeps_predicted_beside_measured(tmp_path):
    """measured = per round, the server's round time less the slowest site's compute time; the median over the
    rounds after the first (not the difference of the two medians: here 3 s, against 2 s round by round)."""
    (tmp_path / "workspace").mkdir()
    stamp = "2026-12-04 03:00:{:02d},000 - {} - INFO - {}\n"
    banner = "\n                                {}.\n"
    (tmp_path / "workspace" / "log.txt").write_text("".join(
        stamp.format(t, "FedAvg", "-") + banner.format(what)
        for t, what in [(0, "Round 1 started"), (20, "Round 2 started"), (30, "Round 3 started"),
                        (42, "Round 4 started"), (53, "Finished FedAvg")]))  # rounds of 20, 10, 12 and 11 s

    def site_log(name, computes):
        site = tmp_path / "site_logs" / name
        site.mkdir(parents=True)
        site.joinpath("log.txt").write_text("".join(
            stamp.format(t, "Communicator", "Received from server. getTask: train size: 8KB (8 Bytes) time: 1.0 seconds")
            + stamp.format(t + 1, "ClientRunner", "- got task assignment: name=train")
            + stamp.format(t + 1 + c, "ClientRunner", "- start to send task result to server")
            + stamp.format(t + 1 + c, "Communicator", "SubmitUpdate to: server. size: 5KB (5 Bytes). time: 0.5 seconds")
            for t, c in zip((0, 20, 30, 42), computes)))
    site_log("site-1", (15, 6, 9, 5))
    site_log("site-2", (14, 8, 7, 9))  # the slowest site per round after the first: 8, 9, 9 s
    p = sizing.predict(4096, 4096, 2, SLOPES)
    assert sizing.record(str(tmp_path), p) == 2.0  # median(10 - 8, 12 - 9, 11 - 9)
    saved = json.loads((tmp_path / "sizing.json").read_text())
    assert saved["predicted"]["round_exchange_s"] == p.round_exchange_s and saved["measured"]["round_exchange_s"] == 2.0
    site_log("site-3", (15, 6, 9))  # a site that missed a round: the rounds cannot be paired
    assert sizing.measured_exchange_s(str(tmp_path)) is None


def _benchmark_rows(slopes: dict, model_bytes: int, counts: list) -> list:
    """benchmarks/exchange.py's CSV rows (strings, GiB rounded as it writes them) of runs that obey `slopes`."""
    rows = []
    for n in counts:
        p = sizing.predict(model_bytes, model_bytes, n, slopes)
        rows.append({"model": "gpt2-124m", "config": "plain-offload", "sites": str(n),
                     "bytes_up_per_site": str(model_bytes), "model_MB": str(round(model_bytes / 1e6, 1)),
                     "round_s_median": str(p.round_exchange_s), "server_peak_GiB": str(round(p.server_peak_bytes / GIB, 2)),
                     "site_peak_GiB_max": str(round(p.site_peak_bytes / GIB, 2))})
    return rows


def test_fit_recovers_the_slopes_the_runs_obey():
    truth = {"round": {"intercept_s": 1.0, "s_per_gb_site": 6.5},
             "server": {"base_bytes": GIB, "per_model": 0.8, "per_site": 0.12},
             "site": {"base_bytes": GIB // 2, "per_model": 2.9}}
    previous = {"round": {"intercept_s": 1.0, "s_per_gb_site": 99.0},
                "server": {"base_bytes": GIB, "per_model": 9.0, "per_site": 9.0},
                "site": {"base_bytes": GIB // 2, "per_model": 9.0}}
    fitted = sizing.fit(_benchmark_rows(truth, 497_759_232, [2, 4, 8]), previous)
    assert fitted["round"] == pytest.approx(truth["round"], rel=0.01)  # round times are written to 0.1 s
    assert fitted["server"]["per_site"] == pytest.approx(0.12, abs=0.005)  # peaks to 0.01 GiB
    assert fitted["server"]["per_model"] == pytest.approx(0.8, abs=0.02)
    assert fitted["site"]["per_model"] == pytest.approx(2.9, abs=0.01)
    assert fitted["server"]["base_bytes"] == GIB and fitted["round"]["intercept_s"] == 1.0  # kept


def test_fit_refuses_one_site_count_or_mixed_configurations():
    rows = _benchmark_rows(SLOPES, 10**8, [2])
    with pytest.raises(ValueError, match="two or more site counts"):
        sizing.fit(rows, SLOPES)
    mixed = _benchmark_rows(SLOPES, 10**8, [2, 8])
    mixed[1]["config"] = "plain-offload-before"
    with pytest.raises(ValueError, match="one configuration"):
        sizing.fit(mixed, SLOPES)


def test_intercept_is_the_geometric_mean_of_positive_measures():
    assert sizing.intercept([0.25, 1.0]) == 0.5 and sizing.intercept([0.7]) == 0.7
    for bad in ([], [0.5, 0.0]):
        with pytest.raises(ValueError, match="measured exchange"):
            sizing.intercept(bad)
