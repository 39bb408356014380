"""benchmarks/fit_sizing.py: the preflight's slopes refit from an exchange benchmark's CSV and written with their
source, on a copy of sizing_slopes.json."""

import csv
import json
import shutil

import pytest

from benchmarks import fit_sizing
from fl_deploy.submit_job import sizing

MODEL = 497_759_232


def _write_csv(path, counts, config="plain-offload"):
    slopes = sizing.load_slopes()
    rows = []
    for n in counts:
        p = sizing.predict(MODEL, MODEL, n, slopes)
        rows.append({"model": "gpt2-124m", "sites": n, "config": config, "status": "FINISHED:COMPLETED",
                     "round_s_median": p.round_exchange_s * 2, "server_peak_GiB": round(p.server_peak_bytes / 2**30, 2),
                     "site_peak_GiB_max": round(p.site_peak_bytes / 2**30, 2), "model_MB": round(MODEL / 1e6, 1),
                     "bytes_up_per_site": MODEL})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def slopes_copy(tmp_path, monkeypatch):
    path = tmp_path / "sizing_slopes.json"
    shutil.copy(sizing.SLOPES, path)
    monkeypatch.setattr(sizing, "SLOPES", str(path))
    return path


def test_write_records_the_run_and_the_new_round_slope(tmp_path, slopes_copy, capsys):
    before = json.loads(slopes_copy.read_text())
    _write_csv(tmp_path / "run.csv", [2, 8])  # rounds twice as long as the current slopes predict
    assert fit_sizing.main([str(tmp_path / "run.csv"), "--commit", "abc1234", "--write"]) == 0
    after = json.loads(slopes_copy.read_text())
    assert after["source"]["runs"][-1]["commit"] == "abc1234"
    assert len(after["source"]["runs"]) == len(before["source"]["runs"]) + 1
    assert after["round"]["s_per_gb_site"] > 1.9 * before["round"]["s_per_gb_site"]
    assert after["server"]["per_site"] == pytest.approx(before["server"]["per_site"], abs=0.01)
    out = capsys.readouterr().out
    assert "gpt2-124m 8 sites: round" in out and "written:" in out
    assert fit_sizing.main([str(tmp_path / "run.csv"), "--commit", "abc1234", "--write"]) == 0  # the same again
    assert json.loads(slopes_copy.read_text())["source"]["runs"] == after["source"]["runs"]


def test_without_write_nothing_changes_and_a_run_of_one_site_count_is_refused(tmp_path, slopes_copy, capsys):
    before = slopes_copy.read_text()
    _write_csv(tmp_path / "run.csv", [2, 8])
    assert fit_sizing.main([str(tmp_path / "run.csv"), "--commit", "abc1234"]) == 0
    assert slopes_copy.read_text() == before
    _write_csv(tmp_path / "one.csv", [2])
    with pytest.raises(SystemExit) as e:
        fit_sizing.main([str(tmp_path / "one.csv"), "--commit", "abc1234"])
    assert e.value.code == 2 and "two or more site counts" in capsys.readouterr().err


def _sizing_json(folder, measured, exchange_bytes=538_184, sites=2):
    folder.mkdir(parents=True)
    (folder / "sizing.json").write_text(json.dumps({"predicted": {"sites": sites, "exchange_bytes": exchange_bytes},
                                                    "measured": {"round_exchange_s": measured}}))
    return str(folder / "sizing.json")


def test_tiny_jobs_set_the_intercept_to_their_geometric_mean_then_the_slope_refits_through_it(
        tmp_path, slopes_copy, capsys):
    paths = [_sizing_json(tmp_path / "results" / job, v) for job, v in (("j1", 0.25), ("j2", 1.0), ("j3", None))]
    paths.append(_sizing_json(tmp_path / "results" / "big", 12.0, exchange_bytes=MODEL))  # a 124M job: not tiny
    assert fit_sizing.main(["--tiny_jobs", *paths, "--commit", "def5678", "--write"]) == 0
    after = json.loads(slopes_copy.read_text())
    assert after["round"]["intercept_s"] == 0.5  # sqrt(0.25 x 1.0); j3 (one round) and big left out
    entry = after["source"]["runs"][-1]
    assert entry["jobs"] == ["j1", "j2"] and entry["commit"] == "def5678"
    out = capsys.readouterr().out
    assert "j3/sizing.json: no measured exchange" in out and "big/sizing.json: not a tiny job (996 MB" in out
    assert "refit them through this one" in out
    assert fit_sizing.main(["--tiny_jobs", paths[0], "--commit", "def5678", "--write"]) == 0  # replaces its entry
    runs = json.loads(slopes_copy.read_text())["source"]["runs"]
    assert [r["jobs"] for r in runs if "jobs" in r] == [["j1"]]
    _write_csv(tmp_path / "run.csv", [2, 8])
    assert fit_sizing.main([str(tmp_path / "run.csv"), "--commit", "abc1234", "--write"]) == 0
    assert json.loads(slopes_copy.read_text())["round"]["intercept_s"] == 0.25  # the slope fitted through it


def test_tiny_jobs_without_a_measure_or_not_a_sizing_json_are_refused(tmp_path, slopes_copy, capsys):
    before = slopes_copy.read_text()
    (tmp_path / "x.json").write_text("[]")
    _write_csv(tmp_path / "run.csv", [2, 8])
    for args in (["--tiny_jobs", _sizing_json(tmp_path / "one-round", None)], ["--tiny_jobs", str(tmp_path / "x.json")],
                 [], ["--tiny_jobs", str(tmp_path / "one-round" / "sizing.json"), str(tmp_path / "run.csv")]):
        with pytest.raises(SystemExit) as e:
            fit_sizing.main([*args, "--commit", "abc1234", "--write"])
        assert e.value.code == 2
    assert "error:" in capsys.readouterr().err and slopes_copy.read_text() == before
