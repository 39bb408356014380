"""benchmarks/training.py: the FL client's training throughput against the standalone trainer."""

import os
import subprocess
import sys

import pytest

from benchmarks import training as bt
from support import check_measurement

from fl_deploy import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "training.py")


def run_cli(*argv):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv, words", [
    (["--rounds", "1"], "--rounds"),
    (["--steps", "0"], "--steps"),
    (["--precision", "fp16"], "--precision"),
    (["--precision", "fp32,fp32"], "--precision"),
    (["--model", "/no/such/model"], "--model"),
    (["--fl", "docker"], "--fl"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("training.py: error:") and words in last


def test_help():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "FL / standalone" in proc.stdout and "--precision" in proc.stdout


# ---------------------------------------------------------------- reading the simulator's logs

SITE_LOG = """\
2026-01-01 10:00:05,000 - TaskScriptRunner - INFO - site-1: round 0 received 28 tensors
2026-01-01 10:00:05,500 - TaskScriptRunner - INFO - {'eval_loss': '6.0', 'eval_runtime': '0.4', 'epoch': 0}
2026-01-01 10:00:06,000 - TaskScriptRunner - INFO - {'loss': '5.7', 'num_tokens': '4096', 'epoch': '0.1'}
2026-01-01 10:00:06,500 - TaskScriptRunner - INFO - {'loss': '5.6', 'num_tokens': '8192', 'epoch': '0.2'}
2026-01-01 10:00:07,500 - TaskScriptRunner - INFO - {'train_runtime': '1.5', 'train_loss': '5.65', 'epoch': '0.2'}
2026-01-01 10:00:08,000 - TaskScriptRunner - INFO - {'eval_loss': '5.8', 'eval_runtime': '0.4', 'epoch': '0.2'}
2026-01-01 10:00:08,100 - TaskScriptRunner - INFO - site-1: round 0 steps=2 train_loss=5.65 eval_loss=5.8
2026-01-01 10:00:11,000 - TaskScriptRunner - INFO - site-1: round 1 received 28 tensors
2026-01-01 10:00:11,250 - TaskScriptRunner - INFO - {'eval_loss': '5.8', 'eval_runtime': '0.2', 'epoch': '0.2'}
2026-01-01 10:00:12,000 - TaskScriptRunner - INFO - {'loss': '5.5', 'num_tokens': '1.229e+04', 'epoch': '0.1'}
2026-01-01 10:00:12,500 - TaskScriptRunner - INFO - {'loss': '5.4', 'num_tokens': '1.638e+04', 'epoch': '0.2'}
2026-01-01 10:00:13,250 - TaskScriptRunner - INFO - {'train_runtime': '1.25', 'train_loss': '5.45', 'epoch': '0.2'}
2026-01-01 10:00:13,500 - TaskScriptRunner - INFO - {'eval_loss': '5.7', 'eval_runtime': '0.2', 'epoch': '0.2'}
2026-01-01 10:00:13,600 - TaskScriptRunner - INFO - site-1: round 1 steps=2 train_loss=5.45 eval_loss=5.7
"""

SERVER_LOG = """\
2026-01-01 10:00:00,000 - FedAvg - INFO - [identity=server] -
--------------------------------------------------------------------------------
                                Round 0 started.
--------------------------------------------------------------------------------
2026-01-01 10:00:09,000 - FedAvg - INFO - aggregating 1 update(s) at round 0
2026-01-01 10:00:10,000 - FedAvg - INFO - [identity=server] -
--------------------------------------------------------------------------------
                                Round 1 started.
--------------------------------------------------------------------------------
2026-01-01 10:00:14,000 - FedAvg - INFO - [identity=server] -
================================================================================
                                Finished FedAvg.
================================================================================
"""


def test_site_and_server_logs_give_each_round_and_its_phases():
    rounds = bt.merge_rounds(bt.parse_site_log(SITE_LOG), bt.parse_server_rounds(SERVER_LOG))
    assert len(rounds) == 2
    r0, r1 = rounds
    assert (r0["steps"], r0["tokens"], r1["tokens"]) == (2, 8192, 16380 - 8192)  # num_tokens is cumulative
    assert r0["train_s"] == pytest.approx(2.0)  # global eval line -> train_runtime line
    assert r0["loop_s"] == 1.5
    assert r1["train_s"] == pytest.approx(2.0) and r1["loop_s"] == 1.25
    assert r1["fetch_s"] == pytest.approx(1.0)  # round start 10:00:10 -> received 10:00:11
    assert r1["load_eval_s"] == pytest.approx(0.25)
    assert r1["local_eval_s"] == pytest.approx(0.25)
    assert r1["send_s"] == pytest.approx(0.4)  # steps= line 13.6 -> FedAvg finished 14.0
    assert r1["round_s"] == pytest.approx(4.0)

    fl = bt.summarize("fp32", "FL", "sim", {"rounds": rounds, "bf16": False})
    assert fl["tokens"] == 16380 and fl["train_s"] == 4.0
    assert fl["train_tok_s"] == round(16380 / 4.0, 1)
    assert fl["loop_tok_s"] == round(16380 / 2.75, 1)
    # Both rounds' training (4 s) + 2 rounds x what steady round 1 spent around its training (4 s - 2 s).
    assert fl["e2e_s"] == 8.0 and fl["e2e_tok_s"] == round(16380 / 8.0, 1)


def test_a_round_without_its_training_lines_is_an_error():
    broken = "\n".join(line for line in SITE_LOG.splitlines() if "train_runtime" not in line)
    with pytest.raises(bt.BenchmarkError, match="lacks"):
        bt.parse_site_log(broken)


def test_a_trainer_that_ran_in_the_wrong_precision_is_an_error():
    rounds = [{"steps": 1, "tokens": 10, "train_s": 1.0, "loop_s": 0.5}]
    with pytest.raises(bt.BenchmarkError, match="bf16=False"):
        bt.summarize("bf16", "standalone", "x", {"rounds": rounds, "bf16": False})


# ---------------------------------------------------------------- a real measurement, CPU, tiny


def test_cpu_measurement_fl_in_process(tmp_path):
    out = tmp_path / "result"
    assert bt.main(["--model", "tiny", "--precision", "fp32", "--fl", "inprocess", "--rounds", "2", "--steps", "2",
                    "--batch_size", "4", "--eval_samples", "8", "--out", str(out)]) == 0
    check_measurement(out, steps_total=4, batch=4)


