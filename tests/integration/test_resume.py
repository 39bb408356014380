"""Resume: the server is killed mid-job; after a restart the job is resubmitted from the last persisted global model
(checkpoints/<job_id>/ in the server workspace) and finishes, losing at most the round that was in progress."""

import json
import os
import re
import signal
import time

import pytest

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
ROUNDS = 3
TRAIN = ["--max_steps", "3", "--batch_size", "4", "--eval_samples", "16", "--lr_schedule", "job"]


def _job(tiny, out, *extra):
    from fl_deploy import make_job

    assert make_job.main(["--out", out, "--sites", ",".join(SITES), "--rounds", str(ROUNDS),
                          "--model", tiny["model"], "--dataset", tiny["dataset"], *TRAIN, *extra]) == 0
    return out


def _progress(fed, job_id):
    path = os.path.join(fed.workspace("localhost"), "checkpoints", job_id, "progress.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_resume_after_server_kill(tmp_path, tiny_assets, figures):
    import torch
    from transformers import AutoModelForCausalLM

    from fl_site.data import site_split
    from fl_common.model import load_exchanged_state_dict, load_tokenizer
    from fl_site.training import build_trainer, evaluate, parse_settings

    fed = local_federation.ProcessFederation(str(tmp_path), SITES)
    fed.start()
    try:
        fed.wait_for_sites()
        first = fed.nvflare("job", "submit", "-j", _job(tiny_assets, str(tmp_path / "job1")))["data"]["job_id"]
        deadline = time.monotonic() + 300
        while (_progress(fed, first) or {}).get("completed_round") is None:
            assert time.monotonic() < deadline, "no round was persisted in time"
            time.sleep(0.5)
        killed_at = time.monotonic()
        os.killpg(fed.procs["localhost"].pid, signal.SIGKILL)
        fed.procs["localhost"].wait()
        progress = _progress(fed, first)
        done = progress["completed_round"]
        assert done < ROUNDS - 1, "the job finished before the kill: make rounds longer"

        fed.restart("localhost")
        fed.wait_for_sites()
        rejoined_s = time.monotonic() - killed_at
        second = fed.nvflare("job", "submit", "-j", _job(
            tiny_assets, str(tmp_path / "job2"), "--initial_ckpt", progress["checkpoint"],
            "--start_round", str(done + 1)))["data"]["job_id"]
        waited = fed.nvflare("job", "wait", second, "--timeout", "600", timeout=660)
        meta = fed.nvflare("job", "meta", second)
        assert meta["data"]["status"] == "FINISHED:COMPLETED", (waited, meta)
        result = fed.nvflare("job", "download", second, "-o", str(tmp_path / "dl"))["data"]["download_path"]
        site_logs = {site: fed.site_job_log(site, second) for site in SITES}
    finally:
        fed.stop()

    with open(os.path.join(result, "workspace", "metrics", "round_metrics.jsonl")) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    assert [r["round"] for r in rounds] == list(range(done + 1, ROUNDS))

    # The resumed job's first global model is the persisted checkpoint, not the pretrained model.
    settings = parse_settings(["--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"], *TRAIN])
    train_ds, eval_ds = site_split(settings.dataset, 0, len(SITES), eval_samples=settings.eval_samples)
    model = AutoModelForCausalLM.from_pretrained(settings.model)
    load_exchanged_state_dict(model, torch.load(progress["checkpoint"], weights_only=True)["model"])
    ckpt_loss = evaluate(build_trainer(model, load_tokenizer(settings.model), train_ds, eval_ds, settings,
                                       str(tmp_path / "eval")))
    for site in rounds[0]["sites"]:
        values = {m["name"]: m["value"] for m in site["metrics"]}
        assert values["global_eval_loss"] == pytest.approx(ckpt_loss["eval_loss"], abs=1e-4)

    # The job-wide schedule continues across the resume: the resumed job's first step uses
    # the rate of step (done + 1) x 3 of one cosine over ROUNDS x 3 steps, as the uninterrupted job would have.
    import math

    from fl_site.training import TrainSettings

    steps = int(TRAIN[TRAIN.index("--max_steps") + 1])
    expected = TrainSettings().learning_rate * 0.5 * (1 + math.cos(math.pi * (done + 1) * steps / (ROUNDS * steps)))
    for site in SITES:
        logged = re.search(rf"{site}: round {done + 1} steps={steps} lr=(\S+)", site_logs[site])
        assert logged and float(logged.group(1)) == pytest.approx(expected, rel=1e-2), (site, logged, expected)

    figures(f"resume: kill after round {done + 1} of {ROUNDS} was persisted; sites re-registered "
          f"{rejoined_s:.1f}s after the kill; kept {done + 1} round(s), lost at most round {done + 2} "
          f"(in progress), resumed job ran rounds {[r['round'] + 1 for r in rounds]}")
