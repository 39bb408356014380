"""Site-local data (--data_source site): a site's own folder in every format fl_site/data.py reads, the one-sentence
refusals, the mount the compose files give each site, and the server's held-out loss weighted by held-out rows."""

import json
import math
import os

import pytest
import yaml

from fl_common.held_out import HELD_OUT_ROWS, HeldOutMean, weighted_held_out
from fl_deploy import ROOT, compose_files, make_tiny_assets
from fl_deploy.project import load_project
from fl_site import site_data
from fl_site.data import DataError, fingerprint, load_text_dataset
from fl_site.training import TrainSettings

ROWS = [{"text": f"review {i} was {'good' if i % 3 else 'bad'}.", "label": int(i % 3 > 0)} for i in range(40)]


def write_rows(path, rows, fmt):
    from datasets import Dataset

    ds = Dataset.from_list(rows)
    {"parquet": ds.to_parquet, "jsonl": ds.to_json, "csv": ds.to_csv}[fmt](path)


def own(path, **kw):
    return site_data.load_own_data("site-7", environ={site_data.DIR_ENV: str(path),
                                                      site_data.VAR_ENV: "FL_SITE_DATA_SITE_7"}, **kw)


@pytest.mark.parametrize("layout", ["parquet-split", "jsonl-train", "csv-train", "save_to_disk", "one-file"])
def test_every_format_works_from_a_site_folder_with_all_its_rows(tmp_path, layout):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "data"
    folder.mkdir()
    if layout == "parquet-split":
        write_rows(str(folder / "train.parquet"), ROWS[:30], "parquet")
        write_rows(str(folder / "test.parquet"), ROWS[30:], "parquet")
    elif layout == "save_to_disk":
        DatasetDict(train=Dataset.from_list(ROWS[:30]), test=Dataset.from_list(ROWS[30:])).save_to_disk(str(folder))
    elif layout == "one-file":
        folder = tmp_path / "rows.jsonl"
        write_rows(str(folder), ROWS, "jsonl")
    else:
        fmt = layout.split("-")[0]
        write_rows(str(folder / f"train.{fmt}"), ROWS, fmt)
    data = own(folder)
    expected = load_text_dataset(str(folder), seed=42)  # no sharding: the site's whole train split, its own test
    assert len(data.train) == len(expected["train"]) and len(data.held_out) == len(expected["test"])
    assert len(data.train) + len(data.held_out) == len(ROWS)
    assert fingerprint(data.train) == fingerprint(expected["train"])
    assert data.label_counts == {k: v for k, v in sorted(
        {y: expected["train"]["label"].count(y) for y in (0, 1)}.items())}
    capped = own(folder, max_train_samples=5, eval_samples=2)
    assert (len(capped.train), len(capped.held_out)) == (5, 2)


def _refusal(path) -> str:
    with pytest.raises(DataError) as e:
        own(path)
    msg = str(e.value)
    # One sentence: the site, the path as the site sees it, the fix (the host's variable, the restart).
    assert msg.startswith("site-7: its own data (--data_source site) at " + str(path)), msg
    assert "set FL_SITE_DATA_SITE_7 in that host's .env" in msg and "docker compose up -d" in msg, msg
    assert "\n" not in msg and msg.count(". ") == 0, msg
    return msg


def test_missing_empty_unreadable_or_textless_data_is_one_sentence(tmp_path, monkeypatch):
    assert "does not exist" in _refusal(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".keep").write_text("")
    (empty / "README.md").write_text("put data here")
    assert "is empty" in _refusal(empty)
    no_text = tmp_path / "no-text"
    no_text.mkdir()
    write_rows(str(no_text / "train.parquet"), [{"review": "x", "label": 1}] * 5, "parquet")
    assert "no 'text' column" in _refusal(no_text)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.parquet").write_bytes(b"not parquet" * 10)
    assert "cannot be read" in _refusal(broken)
    others = tmp_path / "others"
    others.mkdir()
    (others / "notes.txt").write_text("x")
    assert "has no train.parquet" in _refusal(others)
    monkeypatch.setattr(site_data.os, "access", lambda path, mode: False)  # the tests run as root, who reads all
    assert "is not readable by uid" in _refusal(no_text)


def test_site_rows_reads_the_environment_never_the_job(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_rows(str(folder / "train.parquet"), ROWS, "parquet")
    monkeypatch.setenv(site_data.DIR_ENV, str(folder))
    settings = TrainSettings(data_source="site", sites="site-1,site-2", dataset="/nowhere", eval_samples=0)
    data, line = site_data.site_rows(settings, "site-2")
    assert len(data.train) + len(data.held_out) == len(ROWS)
    assert line.startswith(f"site-2: own data, {len(data.train)} train rows (fingerprint {fingerprint(data.train)})")
    assert f"{len(data.held_out)} held-out rows (fingerprint {fingerprint(data.held_out)})" in line
    assert str(folder) not in line and ROWS[0]["text"] not in line  # the log travels to the server
    assert TrainSettings().data_source == "shared"  # the demo's job is unchanged
    with pytest.raises(ValueError, match="data_source must be one of shared, site"):
        TrainSettings(data_source="mine")


def test_each_site_mounts_its_own_folder_read_only_at_the_fixed_path():
    model = compose_files.participants_model(load_project(os.path.join(ROOT, "project.yml")))
    for site in ("site-1", "site-2"):
        var = compose_files.data_var(site)
        assert f"${{{var}:-{compose_files.NO_SITE_DATA}}}:{site_data.DEFAULT_DIR}:ro" in model["services"][site]["volumes"]
        assert model["services"][site]["environment"] == {site_data.VAR_ENV: var}
    others = [v for name, svc in model["services"].items() if name not in ("site-1", "site-2") for v in svc["volumes"]]
    assert not any(site_data.DEFAULT_DIR in v for v in others)  # the server and the admins never see site data
    assert not any(n for n in os.listdir(os.path.join(ROOT, compose_files.NO_SITE_DATA)) if n != "README.md")
    with open(os.path.join(ROOT, "docker", "site-host.yaml")) as f:
        site = yaml.safe_load(f.read().replace("!reset", ""))["services"]["site"]
    assert f"${{FL_SITE_DATA:-./site-data}}:{site_data.DEFAULT_DIR}:ro" in site["volumes"]
    assert site["environment"][site_data.VAR_ENV] == "FL_SITE_DATA"


def test_tiny_assets_write_a_site_folder_with_its_label_mix(tmp_path):
    out = tmp_path / "site-1"
    assert make_tiny_assets.main(["--site-data", str(out), "--label-mix", "0.8", "--seed", "3", "--train", "50",
                                  "--test", "10"]) == 0
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet"]
    data = own(out)
    assert data.label_counts == {0: 10, 1: 40}
    assert make_tiny_assets.mixed_labels(6, 0.5) == [0, 1, 0, 1, 0, 1]  # the default data is unchanged


def test_global_held_out_loss_is_weighted_by_held_out_rows():
    reports = [{"global_eval_loss": 2.0, "eval_loss": 1.0, HELD_OUT_ROWS: 30, "train_loss": 9.0},
               {"global_eval_loss": 4.0, "eval_loss": 3.0, HELD_OUT_ROWS: 10, "train_loss": 1.0}]
    out = weighted_held_out(reports)
    assert out == {HELD_OUT_ROWS: 40, "global_eval_loss": 2.5, "eval_loss": 1.5, "perplexity": math.exp(1.5)}
    assert weighted_held_out([{"global_eval_loss": 2.0}]) == {}  # an older client: NVFlare's means stand
    mean = HeldOutMean()
    for i, r in enumerate(reports):
        mean.add(f"site-{i}", r)
    assert mean.apply({"train_loss": 5.0, "global_eval_loss": 3.0})["global_eval_loss"] == 2.5
    assert mean.apply({"train_loss": 5.0})["train_loss"] == 5.0 and mean.apply(None) is None


def test_the_server_reports_the_row_weighted_mean_not_the_step_weighted_one():
    """LargeModelFedAvg's own aggregation path: two results whose steps and held-out rows disagree."""
    import torch
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

    from fl_server.fedavg import LargeModelFedAvg

    fedavg = LargeModelFedAvg(num_clients=2, num_rounds=1, broadcast_mode="per-site", aggregation="nvflare")
    fedavg._aggr_helper, fedavg._aggr_metrics_helper = WeightedAggregationHelper(), WeightedAggregationHelper()
    fedavg._all_metrics, fedavg._received_count, fedavg._expected_count = True, 0, 2
    fedavg._params_type, fedavg._site_metric_weights, fedavg.current_round = None, {}, 0
    fedavg._targets = ["site-1", "site-2"]
    for site, steps, rows, loss in (("site-1", 1, 90, 1.0), ("site-2", 9, 10, 5.0)):
        fedavg._aggregate_one_result(FLModel(params={"w": torch.ones(2)}, params_type=ParamsType.FULL,
                                             metrics={"global_eval_loss": loss, "eval_loss": loss, "train_loss": loss,
                                                      HELD_OUT_ROWS: rows},
                                             meta={"client_name": site, "NUM_STEPS_CURRENT_ROUND": steps}))
    metrics = fedavg._get_aggregated_result().metrics
    assert metrics["global_eval_loss"] == pytest.approx((90 * 1.0 + 10 * 5.0) / 100)  # 1.4, not steps' 4.6
    assert metrics[HELD_OUT_ROWS] == 100
    assert metrics["train_loss"] == pytest.approx((1 * 1.0 + 9 * 5.0) / 10)  # training: NVFlare's step weights
    assert json.dumps(fedavg.round_stats.metrics)  # what TensorBoard's global/* gets
    assert fedavg.round_stats.metrics["global_eval_loss"] == pytest.approx(1.4)
