"""benchmarks/quality.py: its command line, the client-log parser and the table (the run itself is a benchmark)."""

import os
import subprocess
import sys

import pytest

from benchmarks import quality as bq
from benchmarks import quality_site_local
from fl_deploy import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "quality.py")


def run_cli(*argv):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, timeout=60)


def test_help():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("centralized", "alone", "--semantics", "--partitions", "FL ÷ centralized"):
        assert word in proc.stdout, word


@pytest.mark.parametrize("argv, words", [
    (["--partitions", "pathological"], "--partitions"),
    (["--semantics", "keep/job"], "--semantics"),
    (["--sites", "1"], "--sites"),
    (["--rounds", "0"], "--rounds"),
    (["--alpha", "0"], "--alpha"),
    (["--learning_rate", "-1"], "--learning_rate"),
    (["--model", "./no/such/model"], "--model"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("quality.py: error:") and words in lines[-1], proc.stderr


def test_parse_client_log_reads_what_client_py_prints():
    log = "\n".join([
        "2026-11-30 10:00:00,000 - ClientAPI - INFO - site-1: shard 0/2, 1800 train rows (fingerprint ab12), "
        "400 held-out rows; partition label-skew, labels {0: 1500, 1: 300}",
        "site-2: shard 1/2, 2200 train rows (fingerprint cd34), 400 held-out rows; partition label-skew, "
        "labels {0: 500, 1: 1700}",
        "site-1: round 0 steps=25 lr=0.003 train_loss=5.1000 global_eval_loss=5.9841 eval_loss=4.2000",
        "site-1: round 1 steps=25 lr=0.00285 train_loss=3.1000 global_eval_loss=3.5000 eval_loss=3.1000",
        "site-2: round 0 steps=25 lr=0.003 train_loss=5.0000 global_eval_loss=5.9841 eval_loss=4.3000",
    ])
    parsed = bq.parse_client_log(log)
    assert parsed["site-1"]["rows"] == 1800 and parsed["site-1"]["labels"] == "{0: 1500, 1: 300}"
    assert parsed["site-1"]["rounds"] == {0: (25, 5.9841), 1: (25, 3.5)}
    assert parsed["site-2"]["rounds"] == {0: (25, 5.9841)}


class _Args:
    rounds, steps = 2, 10


def test_final_table_gives_the_ratios_of_the_last_round():
    rows = (bq.curve_rows("centralized", "union", "one run", [6.0, 3.0, 2.0], _Args, 16)
            + bq.curve_rows("site-1 alone", "iid", "one run", [6.0, 3.5, 2.5], _Args, 8)
            + bq.curve_rows("site-2 alone", "iid", "one run", [6.0, 3.4, 2.4], _Args, 8)
            + bq.curve_rows("FL iid reset/job", "iid", "reset/job", [6.0, 3.1, 2.06], _Args, 16)
            + bq.curve_rows("FL iid carry/round", "iid", "carry/round", [6.0, 3.3, 2.5], _Args, 16)
            # the site-alone arms of another partition have the same names and must not replace these
            + bq.curve_rows("site-1 alone", "label-skew", "one run", [6.0, 4.0, 3.0], _Args, 8)
            + bq.curve_rows("site-2 alone", "label-skew", "one run", [6.0, 3.9, 2.9], _Args, 8)
            + bq.curve_rows("FL label-skew reset/job", "label-skew", "reset/job", [6.0, 3.2, 2.2], _Args, 16))
    assert [r["step"] for r in rows[:3]] == [0, 10, 20] and rows[2]["rows_seen"] == 320
    assert rows[2]["perplexity"] == pytest.approx(7.389, abs=1e-3)
    lines = bq.final_table(rows, _Args)
    assert len(lines) == 8
    table = {t["arm"]: t for t in lines if t["partition"] in ("iid", "union")}
    good, bad = table["FL iid reset/job"], table["FL iid carry/round"]
    assert good["ratio_centralized"] == pytest.approx(1.03) and good["ratio_best_alone"] == pytest.approx(2.06 / 2.4, abs=1e-4)
    assert good["below_every_alone"] is True and bad["below_every_alone"] is False
    skew = next(t for t in lines if t["arm"] == "FL label-skew reset/job")
    assert skew["ratio_best_alone"] == pytest.approx(2.2 / 2.9, abs=1e-4) and skew["below_every_alone"] is True
    text = bq.markdown(list(table.values()), "header", ["a note"])
    assert "| FL iid reset/job | iid | reset/job | 2.0600 | 7.85 | **1.030** ✓ | 0.858 ✓ |" in text
    assert "**1.250** ✗" in text and "- a note" in text


def test_plot_draws_one_line_per_arm_and_partition(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real_plot = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        drawn.append((self.get_title(), kwargs.get("label"), list(args[0]), list(args[1])))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    rows = (bq.curve_rows("centralized", "union", "one run", [6.0, 3.0, 2.0], _Args, 16)
            + bq.curve_rows("site-1 alone", "iid", "one run", [6.0, 3.5, 2.5], _Args, 8)
            + bq.curve_rows("site-1 alone", "label-skew", "one run", [6.0, 4.0, 3.0], _Args, 8)
            # site-local: its own panel, its own arms only, their loss weighted by held-out rows
            + quality_site_local.curve_rows("site-1 alone", "one run", [{"site-1": 6.0, "site-2": 6.4},
                                                                        {"site-1": 1.8, "site-2": 4.2}],
                                            {"site-1": 30, "site-2": 10}, _Args, 8))
    bq.plot(rows, str(tmp_path / "q.png"), "title")
    assert (tmp_path / "q.png").stat().st_size > 0
    assert sorted((t, label, len(x)) for t, label, x, _ in drawn) == [
        ("iid", "centralized", 3), ("iid", "site-1 alone", 3), ("label-skew", "centralized", 3),
        ("label-skew", "site-1 alone", 3), ("site-local", "site-1 alone", 2)]
    assert next(y for t, _, _, y in drawn if t == "site-local") == pytest.approx([6.1, 2.4])
