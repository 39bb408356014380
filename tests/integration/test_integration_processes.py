"""Integration: provision a tiny project, run server + 2 sites from their kits as processes, submit the job with
the admin kit (nvflare job submit), and check what came back. No containers: see tests/e2e for those."""

import json
import math
import os

import pytest

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
ROUNDS = 2
TRAIN = ["--max_steps", "3", "--batch_size", "4", "--eval_samples", "16"]


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, tiny_assets):
    from fl_deploy import make_job

    root = str(tmp_path_factory.mktemp("federation"))
    fed = local_federation.ProcessFederation(root, SITES)
    fed.start()
    try:
        registered_s = fed.wait_for_sites()
        job_dir = os.path.join(root, "job")
        assert make_job.main([
            "--out", job_dir, "--sites", ",".join(SITES), "--rounds", str(ROUNDS),
            "--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"], *TRAIN,
            "--transfer", "tensor",  # the tensor streamers; the default (offload) runs in the other federations
            "--part_mib", "0.03",  # the tiny wte (100 KB) and MLP weights travel as row blocks, as GPT-2's wte does
        ]) == 0
        submitted = fed.nvflare("job", "submit", "-j", job_dir)
        assert submitted["status"] == "ok", submitted
        job_id = submitted["data"]["job_id"]
        waited = fed.nvflare("job", "wait", job_id, "--timeout", "600", timeout=660)
        download = fed.nvflare("job", "download", job_id, "-o", os.path.join(root, "download"))
        assert download["status"] == "ok", download
        yield {
            "fed": fed, "job_id": job_id, "wait": waited, "registered_s": registered_s,
            "result": download["data"]["download_path"], "assets": tiny_assets,
        }
    finally:
        fed.stop()


def read(path):
    with open(path) as f:
        return f.read()


def test_job_completes(finished_job):
    meta = finished_job["fed"].nvflare("job", "meta", finished_job["job_id"])
    assert meta["data"]["status"] == "FINISHED:COMPLETED", meta


def test_every_round_has_every_site(finished_job):
    metrics = os.path.join(finished_job["result"], "workspace", "metrics", "round_metrics.jsonl")
    rounds = [json.loads(line) for line in read(metrics).splitlines() if line.strip()]
    assert [r["round"] for r in rounds] == list(range(ROUNDS))
    for r in rounds:
        assert sorted(s["name"] for s in r["sites"]) == SITES
        for site in r["sites"]:
            values = {m["name"]: m["value"] for m in site["metrics"]}
            assert math.isfinite(values["train_loss"]) and math.isfinite(values["global_eval_loss"])


def _tiny_weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_global_model_was_trained(finished_job):
    import torch

    ckpt = os.path.join(finished_job["result"], "workspace", "app_server", "FL_global_model.pt")
    from fl_common.model import tied_aliases

    final = torch.load(ckpt, weights_only=True)["model"]
    initial = _tiny_weights(finished_job["assets"]["model"])
    assert set(final) == set(initial) - set(tied_aliases(initial))  # tied weights are kept once
    changed = [k for k in final if not torch.equal(final[k].to(initial[k].dtype), initial[k])]
    assert len(changed) > len(final) // 2, f"only {changed} changed"


def test_fl_started_from_the_pretrained_weights(finished_job):
    """Round 0's global model, as evaluated by each site on the shared held-out split, is the pretrained model:
    the same evaluation here on the checkpoint gives the same loss, and a random init does not."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from fl_site.data import site_split
    from fl_common.model import load_model_and_tokenizer
    from fl_site.training import build_trainer, evaluate, parse_settings

    assets = finished_job["assets"]
    settings = parse_settings(["--model", assets["model"], "--dataset", assets["dataset"], *TRAIN])
    scratch = os.path.join(finished_job["fed"].root, "eval")
    train_ds, eval_ds = site_split(settings.dataset, 0, len(SITES), eval_samples=settings.eval_samples)
    model, tokenizer = load_model_and_tokenizer(settings.model)
    pretrained_loss = evaluate(build_trainer(model, tokenizer, train_ds, eval_ds, settings, scratch))["eval_loss"]
    random_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(settings.model))
    random_loss = evaluate(build_trainer(random_model, tokenizer, train_ds, eval_ds, settings, scratch))["eval_loss"]
    assert abs(pretrained_loss - random_loss) > 1e-3  # the check below can tell the two apart

    metrics = os.path.join(finished_job["result"], "workspace", "metrics", "round_metrics.jsonl")
    round0 = json.loads(read(metrics).splitlines()[0])
    for site in round0["sites"]:
        values = {m["name"]: m["value"] for m in site["metrics"]}
        assert values["global_eval_loss"] == pytest.approx(pretrained_loss, abs=1e-4), site["name"]


def test_results_export_finds_the_model_the_job_names(finished_job, tmp_path):
    """export_results.py without --model reads the model from the downloaded job's own server configuration."""
    import shutil

    from fl_deploy import export_results
    from fl_deploy.export_results import model_export

    result = str(tmp_path / "result")
    shutil.copytree(finished_job["result"], result)
    written = export_results.export(result)
    assert os.path.join(result, "global_model") in written and os.path.join(result, "metrics.csv") in written
    assert model_export.job_model(os.path.join(result, "workspace")) == finished_job["assets"]["model"]


def test_tensor_streaming_ran(finished_job):
    """Both directions went through the tensor streamers, every round, for every site."""
    server_log = read(os.path.join(finished_job["result"], "workspace", "log.txt"))
    assert "TensorServerStreamer" in server_log
    for site in SITES:
        assert server_log.count(f"Starting to send tensors to peer '{site}'") == ROUNDS, site
        site_log = finished_job["fed"].site_job_log(site, finished_job["job_id"])
        assert site_log.count("TensorConsumer") == ROUNDS, site  # server -> site
        assert site_log.count("Starting to send tensors to peer") == ROUNDS, site  # site -> server


def test_each_site_trained_on_its_own_shard(finished_job):
    import torch

    from fl_site.data import fingerprint, load_site_data, site_split

    assets = finished_job["assets"]
    seen = {}
    for index, site in enumerate(SITES):
        log = finished_job["fed"].site_job_log(site, finished_job["job_id"])
        train_ds, _ = site_split(assets["dataset"], index, len(SITES))
        expected = f"{site}: shard {index}/{len(SITES)}, {len(train_ds)} train rows (fingerprint {fingerprint(train_ds)})"
        assert expected in log
        labels = load_site_data(assets["dataset"], index, len(SITES)).label_counts
        assert sum(labels.values()) == len(train_ds) and len(labels) == 2
        assert f"partition iid, labels {labels}" in log  # the shard's size and label mix, logged at job start
        assert f"{site}: training in fp32: no CUDA device" in log or torch.cuda.is_available()
        seen[site] = fingerprint(train_ds)
    assert len(set(seen.values())) == len(SITES)


def test_report_timings(finished_job, figures):
    """Not a check: prints the figures the issue note asks for (registration, round times)."""
    stamps = local_federation.round_start_times(read(os.path.join(finished_job["result"], "workspace", "log.txt")))
    assert len(stamps) == ROUNDS + 1
    rounds = [round(b - a, 1) for a, b in zip(stamps, stamps[1:])]
    figures(f"process federation: sites registered in {finished_job['registered_s']:.1f}s, "
          f"round times {rounds} s")
