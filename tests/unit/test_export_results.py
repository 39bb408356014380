"""scripts/export_results.py: a downloaded job result -> Hugging Face model folder, metrics.csv, plots."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from fl_deploy import export_results
from fl_deploy.export_results import metrics, plots

from fl_deploy import ROOT  # noqa: E402
SCRIPT = os.path.join(ROOT, "scripts", "export_results.py")
SITES = ["site-1", "site-2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _round(rnd: int, site_order) -> dict:
    """One round_metrics.jsonl record shaped like the server's, with distinct values per (round, site)."""
    sites = []
    for site in site_order:
        i = SITES.index(site)
        metrics = {
            "train_loss": 5.7 - 0.1 * rnd - 0.01 * i,
            "global_eval_loss": 6.0 - 0.12 * rnd,  # one global model, one shared held-out split
            "eval_loss": 5.86 - 0.11 * rnd + 0.003 * i,
        }
        metrics["perplexity"] = math.exp(metrics["eval_loss"])
        sites.append({"name": site, "metrics": [{"name": k, "value": v} for k, v in metrics.items()],
                      "weight": 3.0 + i, "weight_key": "effective_fedavg_metric_weight"})
    agg = {k: sum(s["weight"] * next(m["value"] for m in s["metrics"] if m["name"] == k) for s in sites)
           / sum(s["weight"] for s in sites) for k in ("train_loss", "global_eval_loss", "eval_loss", "perplexity")}
    return {"round": rnd, "aggregated_metrics": [{"name": k, "value": v} for k, v in agg.items()],
            "sites": sites, "skipped_metrics": []}


def make_result(dest, tiny_model: str, rounds=3) -> dict:
    """A result folder as scripts/submit_job.py downloads it: a trained-looking checkpoint and 3 rounds x 2 sites."""
    import torch

    from fl_common.model import load_model

    model = load_model(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():  # "training": every weight differs from the pretrained folder's
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ws = os.path.join(dest, "workspace")
    os.makedirs(os.path.join(ws, "app_server"))
    os.makedirs(os.path.join(ws, "metrics"))
    torch.save({"model": state, "meta_props": {"current_round": rounds - 1}, "train_conf": {}},
               os.path.join(ws, "app_server", "FL_global_model.pt"))
    records = [_round(r, SITES if r % 2 == 0 else SITES[::-1]) for r in range(rounds)]  # arrival order varies
    with open(os.path.join(ws, "metrics", "round_metrics.jsonl"), "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return {"dir": str(dest), "state": state, "records": records}


@pytest.fixture(scope="module")
def exported(tiny_assets, tmp_path_factory):
    result = make_result(tmp_path_factory.mktemp("results") / "job-1", tiny_assets["model"])
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        rc = export_results.main([result["dir"], "--model", tiny_assets["model"]])
    assert rc == 0
    return {**result, "stdout": out.getvalue()}


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=120)


def _assert_one_line_error(stderr: str, *needles):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


# --- the model ---------------------------------------------------------------------------------------------------

def test_global_model_loads_with_hf_and_has_the_checkpoint_weights(exported, tiny_assets):
    import torch
    from transformers import AutoModelForCausalLM

    folder = os.path.join(exported["dir"], "global_model")
    model = AutoModelForCausalLM.from_pretrained(folder)
    loaded = model.state_dict()
    assert set(loaded) == set(exported["state"])
    for name, tensor in exported["state"].items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name

    # and not the weights of the folder the architecture came from
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_assets["model"]).state_dict()
    assert not torch.equal(pretrained["transformer.wte.weight"], loaded["transformer.wte.weight"])


def test_tokenizer_loads_pads_with_eos_and_runs_with_the_model(exported, tiny_assets):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = os.path.join(exported["dir"], "global_model")
    tok = AutoTokenizer.from_pretrained(folder)
    original = AutoTokenizer.from_pretrained(tiny_assets["model"])
    text = ["I thought the film was wonderful.", "Sadly the plot was dull and the ending was awful."]
    assert tok(text[1])["input_ids"] == original(text[1])["input_ids"]
    assert tok.pad_token == tok.eos_token and tok.pad_token_id == tok.eos_token_id

    batch = tok(text, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the short review is padded
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.eos_token_id).all()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.generation_config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert math.isfinite(out.loss.item())


def test_exported_files_are_readable_by_other_users(exported):
    folder = os.path.join(exported["dir"], "global_model")
    for name in os.listdir(folder):
        assert os.stat(os.path.join(folder, name)).st_mode & 0o044 == 0o044, name


# --- metrics.csv -------------------------------------------------------------------------------------------------

def _csv(exported):
    with open(os.path.join(exported["dir"], "metrics.csv"), newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_metrics_csv_has_a_row_per_round_and_site_plus_global_with_the_jsonl_values(exported):
    header, rows = _csv(exported)
    assert header == ["round", "site", "train_loss", "eval_loss", "global_eval_loss", "perplexity", "held_out_rows"]
    assert len(rows) == len(exported["records"]) * (len(SITES) + 1)
    assert [(r["round"], r["site"]) for r in rows] == [
        (str(rnd + 1), site) for rnd in range(len(exported["records"])) for site in SITES + ["global"]
    ]  # 1-based rounds; sites in a stable order whatever order they arrived in; the server's row last
    for rec in exported["records"]:
        expected = {s["name"]: {m["name"]: m["value"] for m in s["metrics"]} for s in rec["sites"]}
        expected["global"] = {m["name"]: m["value"] for m in rec["aggregated_metrics"]}
        for row in rows:
            if int(row["round"]) == rec["round"] + 1:
                for metric in ("train_loss", "eval_loss", "global_eval_loss", "perplexity"):
                    assert float(row[metric]) == expected[row["site"]][metric], (row, metric)  # exact round trip


def test_missing_metric_is_an_empty_cell(tmp_path):
    path = tmp_path / "round_metrics.jsonl"
    rec = _round(0, SITES)
    rec["sites"][0]["metrics"] = [m for m in rec["sites"][0]["metrics"] if m["name"] != "train_loss"]
    path.write_text(json.dumps(rec) + "\n\n")
    rows = metrics.metric_rows(metrics.read_round_metrics(str(path)))
    metrics.write_csv(rows, str(tmp_path / "m.csv"))
    with open(tmp_path / "m.csv", newline="") as f:
        site1 = next(r for r in csv.DictReader(f) if r["site"] == "site-1")
    assert site1["train_loss"] == "" and float(site1["eval_loss"]) > 0


# --- plots -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["train_loss.png", "global_perplexity.png"])
def test_plots_are_real_png_images(exported, name):
    import matplotlib.image as mpimg
    import numpy as np

    path = os.path.join(exported["dir"], "plots", name)
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 10_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 400
    assert np.asarray(img).std() > 0.01  # drawn on, not a blank canvas


def test_global_perplexity_is_exp_of_global_eval_loss_per_round_then_the_final_aggregate(exported):
    jsonl = os.path.join(exported["dir"], "workspace", "metrics", "round_metrics.jsonl")
    rows = metrics.metric_rows(metrics.read_round_metrics(jsonl))
    points, final = plots.global_perplexity_points(rows)
    recs = exported["records"]
    agg = [{m["name"]: m["value"] for m in r["aggregated_metrics"]} for r in recs]
    # x = rounds completed: the model evaluated at the start of round k (0-based) has had k rounds of training
    assert [x for x, _ in points] == list(range(len(recs)))
    assert [y for _, y in points] == pytest.approx([math.exp(a["global_eval_loss"]) for a in agg])
    assert final == (len(recs), pytest.approx(math.exp(agg[-1]["eval_loss"])))


def test_stdout_lists_the_paths_written(exported):
    d = exported["dir"]
    assert exported["stdout"].split() == [
        os.path.join(d, "global_model"), os.path.join(d, "metrics.csv"),
        os.path.join(d, "plots", "train_loss.png"), os.path.join(d, "plots", "global_perplexity.png"),
    ]


def test_rerun_replaces_the_previous_export(exported, tiny_assets, capsys):
    stale = os.path.join(exported["dir"], "global_model", "stale.txt")
    open(stale, "w").close()
    assert export_results.main([exported["dir"], "--model", tiny_assets["model"]]) == 0
    assert not os.path.exists(stale)
    assert not os.path.exists(os.path.join(exported["dir"], "global_model.partial"))
    assert os.path.isfile(os.path.join(exported["dir"], "global_model", "config.json"))


# --- bad input ---------------------------------------------------------------------------------------------------

def test_help():
    run = _run("--help")
    assert run.returncode == 0
    assert "RESULT_DIR" in run.stdout and "--model" in run.stdout and "1-BASED" in run.stdout


def test_folder_without_checkpoint_exits_2_naming_it(tmp_path, tiny_assets):
    (tmp_path / "workspace" / "metrics").mkdir(parents=True)
    run = _run(str(tmp_path), "--model", tiny_assets["model"])
    assert run.returncode == 2
    _assert_one_line_error(run.stderr, "FL_global_model.pt", str(tmp_path))
    assert os.listdir(tmp_path) == ["workspace"]  # nothing written


def test_result_dir_that_does_not_exist_exits_2(tmp_path, capsys):
    assert export_results.main([str(tmp_path / "nope"), "--model", "gpt2"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "nope", "not a folder")


@pytest.fixture()
def result_copy(exported, tmp_path):
    """A fresh, not yet exported copy of the result folder."""
    dest = tmp_path / "job"
    shutil.copytree(os.path.join(exported["dir"], "workspace"), dest / "workspace")
    return str(dest)


def test_model_path_missing_exits_2_naming_the_path(result_copy, tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    assert export_results.main([result_copy, "--model", missing]) == 2
    _assert_one_line_error(capsys.readouterr().err, missing)
    assert os.listdir(result_copy) == ["workspace"]


def test_unloadable_model_config_exits_2(result_copy, tmp_path, capsys):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert export_results.main([result_copy, "--model", str(bad)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "cannot load the model config", str(bad))
    assert os.listdir(result_copy) == ["workspace"]


def test_checkpoint_of_another_architecture_exits_2_before_writing(result_copy, tiny_assets, tmp_path, capsys):
    other = tmp_path / "one-layer"
    shutil.copytree(tiny_assets["model"], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["n_layer"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    assert export_results.main([result_copy, "--model", str(other)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "does not fit the architecture", "unexpected: transformer.h.1.")
    assert os.listdir(result_copy) == ["workspace"]


def test_checkpoint_without_state_dict_exits_2(result_copy, tiny_assets, capsys):
    import torch

    ckpt = os.path.join(result_copy, "workspace", "app_server", "FL_global_model.pt")
    torch.save({"weights": {}}, ckpt)
    assert export_results.main([result_copy, "--model", tiny_assets["model"]]) == 2
    _assert_one_line_error(capsys.readouterr().err, "no model state dict", ckpt)


def test_malformed_metrics_line_exits_2_naming_the_line(result_copy, tiny_assets, capsys):
    path = os.path.join(result_copy, "workspace", "metrics", "round_metrics.jsonl")
    with open(path, "a") as f:
        f.write("{truncated\n")
    assert export_results.main([result_copy, "--model", tiny_assets["model"]]) == 2
    _assert_one_line_error(capsys.readouterr().err, "round_metrics.jsonl:4", "not JSON")
    assert os.listdir(result_copy) == ["workspace"]


def test_workspace_folder_is_accepted_and_missing_metrics_only_warn(result_copy, tiny_assets, capsys):
    ws = os.path.join(result_copy, "workspace")
    os.remove(os.path.join(ws, "metrics", "round_metrics.jsonl"))
    assert export_results.main([ws, "--model", tiny_assets["model"]]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [os.path.join(ws, "global_model")]
    assert "warning: no" in captured.err and "round_metrics.jsonl" in captured.err
