"""Checks shared by tests in more than one folder (tests/ is on pytest's pythonpath)."""

import csv
import os

import pytest


def read_rows(out) -> dict:
    with open(os.path.join(out, "training_speed.csv")) as f:
        return {(r["precision"], r["run"]): r for r in csv.DictReader(f)}


def check_measurement(out, steps_total, batch):
    rows = read_rows(out)
    alone, fl = rows[("fp32", "standalone")], rows[("fp32", "FL")]
    tokens_per_step = batch * 2 * 128  # grad accum 2, every row fills max_length 128
    for r in (alone, fl):
        assert int(r["steps"]) == steps_total
        assert int(r["tokens"]) == pytest.approx(steps_total * tokens_per_step, rel=1e-3)
        assert float(r["train_s"]) > 0 and float(r["loop_s"]) > 0
        assert float(r["train_tok_s"]) == pytest.approx(int(r["tokens"]) / float(r["train_s"]), rel=1e-3)
    assert float(fl["e2e_tok_s"]) > 0
    assert float(fl["ratio_train"]) == pytest.approx(float(fl["train_tok_s"]) / float(alone["train_tok_s"]),
                                                     abs=1e-3)
    assert float(fl["ratio_e2e"]) == pytest.approx(float(fl["e2e_tok_s"]) / float(alone["train_tok_s"]), abs=1e-3)
    # The round holds the training and more: end-to-end is slower than training alone.
    assert float(fl["e2e_tok_s"]) < float(fl["train_tok_s"])
    with open(os.path.join(out, "training_speed.md")) as f:
        assert "| fp32 | FL (" in f.read()
