"""benchmarks/quality_site_local.py: each site's own generated domain, the "{site}" data folder the simulator's sites
resolve, the check that each FL site read only its own rows, and the table (the run itself is a benchmark)."""

import os
import subprocess
import sys

import pytest

from benchmarks import quality as bq
from benchmarks import quality_site_local as sl
from fl_deploy import ROOT
from fl_site import site_data
from fl_site.data import DataError, fingerprint


def films(rows) -> set:
    return {text.split(" (")[0] for text in rows["text"]}


def test_each_site_gets_its_own_domain_and_reads_only_its_folder_through_the_site_pattern(tmp_path):
    folders = sl.make_site_folders(str(tmp_path / "sites"), 2, train_rows=120, held_out_rows=20, films=8)
    assert folders == {s: str(tmp_path / "sites" / s) for s in ("site-1", "site-2")}
    pattern = {site_data.DIR_ENV: str(tmp_path / "sites" / "{site}")}
    one, two = (site_data.load_own_data(s, environ=pattern) for s in ("site-1", "site-2"))
    assert (len(one.train), len(one.held_out)) == (60, 10) == (len(two.train), len(two.held_out))
    assert one.label_counts == {0: 12, 1: 48} and two.label_counts == {0: 48, 1: 12}  # 80 % and 20 % positive
    assert fingerprint(one.train) != fingerprint(two.train)
    assert films(one.train) != films(two.train)  # each site's own film catalogue
    assert [sl.site_label_mix(k, 3) for k in range(3)] == [0.8, 0.5, 0.2]
    with pytest.raises(DataError, match=f"site-3: .* at {tmp_path}/sites/site-3 does not exist"):
        site_data.load_own_data("site-3", environ=pattern)  # the error names the folder as that site resolved it


def test_check_sites_accepts_each_sites_own_rows_and_refuses_another_sites(tmp_path):
    folders = sl.make_site_folders(str(tmp_path), 2, train_rows=40, held_out_rows=8, films=0)
    settings = bq.train_flags(type("A", (), {"model": "m", "dataset": "d", "steps": 1, "batch_size": 1, "grad_accum": 1,
                                             "learning_rate": 1e-3, "eval_samples": 8, "gradient_checkpointing": False,
                                             "alpha": 0.5, "seed": 42}), "iid")
    from fl_site.training import parse_settings

    data = sl.load_sites(folders, parse_settings(settings + ["--data_source", "site"]))

    def line(site, d):
        return (f"{site}: own data, {len(d.train)} train rows (fingerprint {fingerprint(d.train)}), "
                f"{len(d.held_out)} held-out rows (fingerprint {fingerprint(d.held_out)}); data_source site, "
                f"partition iid, labels {d.label_counts}")

    log = "\n".join(line(s, d) for s, d in data.items())
    sl.check_sites(log, data)
    parsed = bq.parse_client_log(log)
    assert parsed["site-2"]["rows"] == 20 and parsed["site-2"]["held_out_rows"] == 4
    swapped = "\n".join(line(s, d) for s, d in zip(data, reversed(list(data.values()))))
    with pytest.raises(bq.BenchmarkError, match="site-1 logged"):
        sl.check_sites(swapped, data)


class _Args:
    rounds, steps = 2, 10


def test_table_weights_the_sites_by_held_out_rows_and_shows_each_sites_own_loss():
    held = {"site-1": 30, "site-2": 10}
    finals = {"centralized": ("one run", {"site-1": 2.0, "site-2": 2.0}),
              "site-1 alone": ("one run", {"site-1": 1.8, "site-2": 4.2}),  # weak on the other site's domain
              "site-2 alone": ("one run", {"site-1": 3.0, "site-2": 1.9}),
              "FL site-local carry/job": ("carry/job", {"site-1": 2.1, "site-2": 2.5})}
    lines = {t["arm"]: t for t in sl.table(finals, held)}
    assert lines["site-1 alone"]["held_out_loss"] == pytest.approx((30 * 1.8 + 10 * 4.2) / 40)
    fl = lines["FL site-local carry/job"]
    assert fl["held_out_loss"] == pytest.approx(2.2) and fl["ratio_centralized"] == pytest.approx(1.1)
    assert fl["ratio_best_alone"] == pytest.approx(2.2 / 2.4, abs=1e-4) and fl["below_every_alone"] is True
    assert fl["sites"] == {"site-1": 2.1, "site-2": 2.5}
    text = sl.markdown(list(lines.values()), held)
    assert "| site-1 held-out (30 rows) | site-2 held-out (10 rows) |" in text
    assert "| site-1 alone | one run | 2.4000 | 1.8000 | 4.2000 | 1.200 |  |" in text
    assert "| FL site-local carry/job | carry/job | 2.2000 | 2.1000 | 2.5000 | **1.100** | 0.917 ✓ |" in text
    rows = sl.curve_rows("site-1 alone", "one run", [{"site-1": 6.0, "site-2": 6.4}, finals["site-1 alone"][1]],
                         held, _Args, 8)
    assert [(r["held_out"], r["step"]) for r in rows] == [("weighted", 0), ("weighted", 10), ("site-1", 0),
                                                          ("site-1", 10), ("site-2", 0), ("site-2", 10)]
    assert rows[0]["held_out_loss"] == pytest.approx(6.1) and rows[5]["held_out_loss"] == 4.2


def test_site_local_refuses_a_dataset_it_does_not_generate():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "quality.py"), "--partitions",
                           "iid,site-local", "--dataset", ROOT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "site-local" in proc.stderr.strip().splitlines()[-1] and "--dataset tiny" in proc.stderr

