"""A LoRA job through a provisioned federation (local processes): only the adapter moves, the result loads."""

import os

import torch

from fl_common.model import apply_lora, exchange_state_dict, exchanged_keys, load_model, state_dict_bytes

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "c_attn"}


def test_lora_job_moves_only_the_adapter_and_exports_a_loadable_model(tmp_path, tiny_assets):
    from fl_deploy.harness import local_federation
    from fl_deploy import make_job
    from benchmarks.exchange import streamed_bytes
    from fl_deploy.export_results import export
    from transformers import AutoModelForCausalLM

    sites, rounds = ["site-1", "site-2"], 2
    fed = local_federation.ProcessFederation(str(tmp_path), sites)
    fed.start()
    try:
        fed.wait_for_sites()
        job = str(tmp_path / "job")
        assert make_job.main([
            "--out", job, "--sites", ",".join(sites), "--rounds", str(rounds), "--model", tiny_assets["model"],
            "--dataset", tiny_assets["dataset"], "--max_steps", "2", "--batch_size", "4", "--eval_samples", "8",
            "--lora", "--lora_r", str(LORA["r"]), "--lora_alpha", str(LORA["alpha"]),
            "--transfer", "tensor",  # the tensor streamers log the bytes they move
        ]) == 0
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.nvflare("job", "wait", job_id, "--timeout", "300", timeout=330)
        assert fed.nvflare("job", "meta", job_id)["data"]["status"] == "FINISHED:COMPLETED"
        result = fed.nvflare("job", "download", job_id, "-o", str(tmp_path / "dl"))["data"]["download_path"]
        logs = {s: fed.site_job_log(s, job_id) for s in sites}
    finally:
        fed.stop()

    lora_model = apply_lora(load_model(tiny_assets["model"]), **{**LORA, "dropout": 0.05}, seed=0)
    adapter_bytes = state_dict_bytes(exchange_state_dict(lora_model))
    full_bytes = state_dict_bytes(exchange_state_dict(load_model(tiny_assets["model"])))
    for site, log in logs.items():
        assert log.count(f"received {len(exchanged_keys(lora_model))} tensors") == rounds, site
        moved = streamed_bytes(log)
        # safetensors adds a small JSON header per blob; the full tiny model would be 40x more.
        for direction in ("down", "up"):
            assert adapter_bytes <= moved[direction] < adapter_bytes + 16_384, (site, direction, moved)
        assert moved["up"] < full_bytes / 10

    ckpt = torch.load(os.path.join(result, "workspace", "app_server", "FL_global_model.pt"), weights_only=True)
    assert set(ckpt["model"]) == set(exchanged_keys(lora_model))
    assert any(torch.any(v) for k, v in ckpt["model"].items() if "lora_B" in k), "the adapter was not trained"

    written = export(result, tiny_assets["model"])
    assert os.path.join(result, "global_adapter") in written
    merged = AutoModelForCausalLM.from_pretrained(os.path.join(result, "global_model")).state_dict()
    base = load_model(tiny_assets["model"]).state_dict()
    assert set(merged) == set(base)
    changed = {k for k in base if not torch.equal(merged[k], base[k])}
    assert changed and all(".attn.c_attn." in k for k in changed), changed
