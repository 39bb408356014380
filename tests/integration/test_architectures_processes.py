"""Other Hugging Face architectures as FL jobs through a provisioned federation (local processes): a tiny random
Llama (untied embeddings, grouped-query attention) exchanging the full model in bfloat16 updates and row blocks, and
a tiny random Qwen2 (tied embeddings) with LoRA on PEFT's default targets (with FL_ARCH_JOBS=all, as
scripts/check_slow_cases.py --cases architectures runs it: both architectures in both modes). Each completes, its global model was
trained, and the exported HF model loads and generates. Unit tests of the same machinery per architecture:
tests/unit/test_architectures.py."""

import os

import pytest
import torch

from fl_deploy.harness import local_federation

SITES = ["site-1", "site-2"]
FULL = ["--rounds", "2", "--exchange_dtype", "bfloat16",
        "--part_mib", "0.03"]  # 2 rounds: the sites load the aggregated global model once; embeddings in row blocks
LORA = ["--rounds", "1", "--lora", "--lora_r", "4",
        "--learning_rate", "1e-2"]  # target modules: PEFT's default for the architecture (q_proj, v_proj)
ALL_JOBS = {f"{arch}-{mode}": flags for arch in ("llama", "qwen2") for mode, flags in (("full", FULL), ("lora", LORA))}
# CI runs one of each architecture and each mode; scripts/check_slow_cases.py --cases architectures runs all four
# (FL_ARCH_JOBS=all), each job ~30 s.
JOBS = ALL_JOBS if os.environ.get("FL_ARCH_JOBS") == "all" else \
    {k: ALL_JOBS[k] for k in ("llama-full", "qwen2-lora")}


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_assets, tiny_arch_model):
    """job key (arch-mode) -> (job status, downloaded result folder, seconds from submission to the job's end)."""
    import time

    from fl_deploy import make_job

    root = tmp_path_factory.mktemp("archs")
    out = {}
    with local_federation.ProcessFederation(str(root), SITES) as fed:  # started, sites registered
        for key, flags in JOBS.items():
            arch = key.split("-")[0]
            job = str(root / f"job-{key}")
            assert make_job.main(["--out", job, "--sites", ",".join(SITES),
                                  "--model", tiny_arch_model(arch), "--dataset", tiny_assets["dataset"],
                                  "--max_steps", "2", "--batch_size", "4", "--eval_samples", "8", *flags]) == 0
            start = time.monotonic()
            job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
            fed.nvflare("job", "wait", job_id, "--timeout", "300", timeout=330)
            elapsed = time.monotonic() - start
            status = fed.nvflare("job", "meta", job_id)["data"]["status"]
            dl = fed.nvflare("job", "download", job_id, "-o", str(root / f"dl-{key}"))["data"]["download_path"]
            out[key] = (status, dl, elapsed)
    return out


@pytest.mark.parametrize("key", list(JOBS))
def test_job_completes_trains_and_exports_a_model_that_loads_and_generates(key, results, tiny_arch_model, figures):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fl_common.model import load_model, tied_aliases
    from fl_deploy.export_results import export

    status, result, elapsed = results[key]
    assert status == "FINISHED:COMPLETED", status
    name = tiny_arch_model(key.split("-")[0])
    base = load_model(name).state_dict()
    ckpt = torch.load(os.path.join(result, "workspace", "app_server", "FL_global_model.pt"), weights_only=True)
    if "--lora" in JOBS[key]:
        assert ckpt["model"] and all(".lora_" in k for k in ckpt["model"])
        assert any(torch.any(v) for k, v in ckpt["model"].items() if "lora_B" in k), "the adapter was not trained"
    else:
        assert set(ckpt["model"]) == set(base) - set(tied_aliases(base))
        assert {v.dtype for v in ckpt["model"].values()} == {torch.float32}  # bf16 updates, fp32 global model

    written = export(result)  # the model the job names, from the job's own server config
    assert os.path.join(result, "global_model") in written
    model = AutoModelForCausalLM.from_pretrained(os.path.join(result, "global_model"))
    assert type(model).__name__ == type(load_model(name)).__name__
    exported = model.state_dict()
    changed = {k for k in base if not torch.equal(exported[k], base[k])}
    if "--lora" in JOBS[key]:  # the merged adapter moved the attention's q and v projections only
        assert changed and {k.rsplit(".", 2)[-2] for k in changed} == {"q_proj", "v_proj"}, changed
    else:
        assert len(changed) > len(base) // 2, f"only {sorted(changed)} changed"
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(result, "global_model"))
    inputs = tokenizer(["I thought the film was"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 5
    figures(f"{key} job ({' '.join(JOBS[key])}), 2 steps per round, 2 sites as processes: "
            f"{elapsed:.0f} s from submission to its end")
