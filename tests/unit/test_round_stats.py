"""Per-round accounting of the exchange benchmark (fl_deploy/round_stats.py) on stand-in /proc and logs."""

import os

from fl_deploy import round_stats


def _stat(pid, comm, minflt, utime, stime):
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    return f"{pid} ({comm}) S 1 1 1 0 -1 4194560 {minflt} 7 0 0 {utime} {stime} 0 0 20 0 1 0 5 0 0\n"


def _proc(tmp_path, procs: dict, kids: dict):
    for pid, text in procs.items():
        os.makedirs(tmp_path / str(pid) / "task" / str(pid), exist_ok=True)
        (tmp_path / str(pid) / "stat").write_text(text)
        (tmp_path / str(pid) / "task" / str(pid) / "children").write_text(" ".join(map(str, kids.get(pid, []))))


def test_stat_fields_after_a_comm_with_spaces_and_parentheses():
    assert round_stats.parse_stat(_stat(9, "python3 (job) x", 1234, 250, 50), ticks=100) == (1234, 3.0)


def test_tree_counters_sum_a_tree_and_keep_an_exited_process_last_reading(tmp_path):
    _proc(tmp_path, {10: _stat(10, "server", 100, 100, 0), 11: _stat(11, "job", 1000, 300, 100),
                     20: _stat(20, "site", 5, 10, 0)}, {10: [11]})
    counters = round_stats.TreeCounters({"server": 10, "site-1": 20}, proc=str(tmp_path))
    first = counters()
    assert first["server"][0] == 1100 and abs(first["server"][1] - 500 / round_stats.CLOCK_TICKS) < 1e-9
    assert first["site-1"][0] == 5
    (tmp_path / "10" / "task" / "10" / "children").write_text("")  # the job process exited
    (tmp_path / "10" / "stat").write_text(_stat(10, "server", 150, 100, 0))
    assert counters()["server"][0] == 1150  # 150 now + the job process's last 1000


SERVER_LOG = """\
2026-12-04 03:00:00,000 - LargeModelFedAvg - INFO - [identity=x] -
--------------------------------------------------------------------------------
                                Round 1 started.
--------------------------------------------------------------------------------
2026-12-04 03:00:01,000 - ServerRunner - INFO - [identity=x, peer=site-1] - sent task assignment to client. client_name:site-1
2026-12-04 03:00:01,500 - ServerRunner - INFO - [identity=x, peer=site-2] - sent task assignment to client. client_name:site-2
2026-12-04 03:00:09,000 - ServerRunner - INFO - [identity=x, peer=site-1] - got result from client site-1 for task: name=train
2026-12-04 03:00:10,000 - ServerRunner - INFO - [identity=x, peer=site-2] - got result from client site-2 for task: name=train
2026-12-04 03:00:11,000 - LargeModelFedAvg - INFO - [identity=x] - Start persist model on server.
2026-12-04 03:00:13,000 - LargeModelFedAvg - INFO - [identity=x] - End persist model on server.
2026-12-04 03:00:14,000 - LargeModelFedAvg - INFO - [identity=x] -
                                Round 2 started.
2026-12-04 03:00:14,200 - ServerRunner - INFO - [identity=x] - sent task assignment to client. client_name:site-1
2026-12-04 03:00:14,400 - ServerRunner - INFO - [identity=x] - sent task assignment to client. client_name:site-2
2026-12-04 03:00:17,400 - ServerRunner - INFO - [identity=x] - got result from client site-2 for task: name=train
2026-12-04 03:00:17,900 - LargeModelFedAvg - INFO - [identity=x] - Start persist model on server.
2026-12-04 03:00:18,000 - LargeModelFedAvg - INFO - [identity=x] - End persist model on server.
2026-12-04 03:00:18,100 - LargeModelFedAvg - INFO - [identity=x] -
                                Finished FedAvg.
"""
SITE_LOG = """\
2026-12-04 03:00:01,100 - Communicator - INFO - Received from server. getTask: train size: 8KB (8040 Bytes) time: 5.5 seconds
2026-12-04 03:00:01,200 - ClientRunner - INFO - [identity=site-1] - got task assignment: name=train, id=1
2026-12-04 03:00:07,700 - ClientRunner - INFO - [identity=site-1] - start to send task result to server
2026-12-04 03:00:08,000 - Communicator - INFO - SubmitUpdate to: server. size: 5.6KB (5576 Bytes). time: 3.25 seconds
2026-12-04 03:00:15,100 - Communicator - INFO - Received from server. getTask: train size: 8KB (8040 Bytes) time: 1.5 seconds
2026-12-04 03:00:15,200 - ClientRunner - INFO - [identity=site-1] - got task assignment: name=train, id=2
2026-12-04 03:00:16,200 - ClientRunner - INFO - [identity=site-1] - start to send task result to server
2026-12-04 03:00:17,000 - Communicator - INFO - SubmitUpdate to: server. size: 5.6KB (5576 Bytes). time: 0.75 seconds
"""


def test_phases_from_nvflare_log_lines():
    assert round_stats.server_phases(SERVER_LOG) == [
        {"send_s": 1.5, "results_s": 8.5, "aggregate_s": 1.0, "persist_s": 2.0, "round_s": 14.0},
        {"send_s": 0.4, "results_s": 3.0, "aggregate_s": 0.5, "persist_s": 0.1, "round_s": 4.1}]
    assert round_stats.site_phases(SITE_LOG) == [{"receive_s": 5.5, "send_s": 3.25, "compute_s": 6.5},
                                                 {"receive_s": 1.5, "send_s": 0.75, "compute_s": 1.0}]


def test_round_columns_are_steady_medians_without_round_1():
    stamps = [0.0, 10.0, 20.0, 30.0]  # three rounds
    # cumulative (faults, cpu s): round 1 costs 1000 faults, rounds 2 and 3 cost 100 and 300 at the server
    series = [(0.0, {"server": (0, 0.0), "site-1": (0, 0.0), "site-2": (0, 0.0)}),
              (10.0, {"server": (1000, 9.0), "site-1": (500, 5.0), "site-2": (700, 7.0)}),
              (20.0, {"server": (1100, 10.0), "site-1": (510, 6.0), "site-2": (720, 9.0)}),
              (30.0, {"server": (1400, 12.0), "site-1": (530, 8.0), "site-2": (760, 12.0)})]
    cols = round_stats.round_columns(series, stamps, SERVER_LOG, [SITE_LOG, SITE_LOG])
    assert cols["server_faults_per_round"] == 200 and cols["server_cpu_s_per_round"] == 1.5
    assert cols["site_faults_per_round"] == 22.5  # sites' steady medians 15 and 30
    assert cols["server_persist_s"] == 0.1 and cols["site_receive_s"] == 1.5 and cols["site_send_s"] == 0.75
    assert set(round_stats.STAGE_COLUMNS) <= set(cols)


def test_scaling_line_compares_the_largest_and_smallest_site_counts():
    rows = [{"model": "m", "config": "c", "sites": 2, "server_peak_GiB": 1.0},
            {"model": "m", "config": "c", "sites": 8, "server_peak_GiB": 1.5}]
    assert round_stats.scaling_lines(rows) == ["m c: server peak at 8 vs 2 sites = 1.50 (1.5 / 1.0 GiB; "
                                               "target 0.90-1.10)"]


def test_a_containers_processes_are_its_cgroup_pids(tmp_path, monkeypatch):
    from fl_deploy.harness import compose_stack

    (tmp_path / "cgroup.procs").write_text("101\n102\n")
    monkeypatch.setattr(compose_stack, "_cgroup_dir", lambda cid: str(tmp_path))
    _proc(tmp_path / "proc", {101: _stat(101, "python3", 10, 100, 0), 102: _stat(102, "sub", 5, 0, 100)}, {})
    counters = round_stats.TreeCounters({"server": round_stats.cgroup_pids("c1d")}, proc=str(tmp_path / "proc"))
    faults, cpu = counters()["server"]
    assert faults == 15 and abs(cpu - 200 / round_stats.CLOCK_TICKS) < 1e-9
