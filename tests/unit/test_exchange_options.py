"""The two ways to shrink the model exchange: bfloat16 on the wire, and a LoRA adapter instead of the full model.

bfloat16: half the bytes each way; sites send their update (trained - received) so small steps survive the cast;
the server upcasts every result before NVFlare's weighted sum and keeps, sends from and persists a float32 model.
LoRA: only the adapter tensors travel and are persisted; the checkpoint says which adapter it is.
"""

import os

import pytest
import torch
from support import persistor

from fl_common.model import (apply_lora, exchange_state_dict, exchanged_keys, load_exchanged_state_dict, load_model,
                   state_dict_bytes)

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "c_attn"}


# --- bfloat16 ------------------------------------------------------------------------------------------------------

def test_bf16_halves_the_bytes_and_loads_back_into_a_float32_model(tiny_assets):
    model = load_model(tiny_assets["model"])
    full, half = exchange_state_dict(model), exchange_state_dict(model, "bfloat16")
    assert set(full) == set(half)
    assert {v.dtype for v in half.values()} == {torch.bfloat16}
    assert state_dict_bytes(half) * 2 == state_dict_bytes(full)

    other = load_model(tiny_assets["model"])
    load_exchanged_state_dict(other, {k: v + 1 for k, v in half.items()})
    for k, v in other.state_dict().items():
        assert v.dtype == torch.float32, k
    wte = other.transformer.wte.weight
    assert torch.equal(wte, (half["transformer.wte.weight"] + 1).float())
    assert other.lm_head.weight is wte  # still tied


def test_bf16_update_keeps_steps_that_a_bf16_weight_would_round_away(tiny_assets):
    model = load_model(tiny_assets["model"])
    received = exchange_state_dict(model, "bfloat16")
    load_exchanged_state_dict(model, received)
    key = "transformer.h.0.mlp.c_fc.weight"
    step = 1e-5  # a typical per-round change at lr 2e-4: far below bf16's resolution for weights near 0.02
    with torch.no_grad():
        model.state_dict()[key].add_(step)
    trained = model.state_dict()[key].clone()

    as_weights = exchange_state_dict(model, "bfloat16")[key].float()
    update = exchange_state_dict(model, "bfloat16", base=received)[key]
    assert update.dtype == torch.bfloat16
    survives_as_weights = (as_weights - received[key].float()).abs().mean() / step
    error_as_update = (received[key].float() + update.float() - trained).abs().max() / step
    assert survives_as_weights < 0.5, "bf16 weights should lose most of the step (else this test shows nothing)"
    assert error_as_update < 0.01


def _controller(dtype="bfloat16"):
    from fl_server.fedavg import LargeModelFedAvg
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

    c = LargeModelFedAvg(num_clients=2, exchange_dtype=dtype)
    c._aggr_helper, c._aggr_metrics_helper = WeightedAggregationHelper(), WeightedAggregationHelper()
    c._all_metrics, c._received_count, c._expected_count, c._params_type = True, 0, 2, None
    c._site_metric_weights, c.current_round, c.fl_ctx = {}, 0, None
    c.info = c.warning = lambda *a, **k: None
    return c


def _result(site, params, steps):
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    return FLModel(params=params, params_type=ParamsType.DIFF,
                   meta={"client_name": site, "NUM_STEPS_CURRENT_ROUND": steps})


def test_server_aggregates_bf16_updates_in_float32_and_the_global_model_stays_float32():
    from nvflare.app_common.abstract.fl_model import FLModel
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper
    from nvflare.app_common.utils.fl_model_utils import FLModelUtils

    g = torch.Generator().manual_seed(0)
    a = (torch.randn(64, 64, generator=g) * 1e-3).bfloat16()
    b = (torch.randn(64, 64, generator=g) * 1e-3).bfloat16()
    expected = (a.float() * 3 + b.float() * 7) / 10

    c = _controller()
    assert c._aggregate_one_result(_result("site-1", {"w": a.clone()}, 3))
    assert c._aggregate_one_result(_result("site-2", {"w": b.clone()}, 7))
    aggregated = c._get_aggregated_result()
    mean = aggregated.params["w"]
    assert mean.dtype == torch.float32
    assert torch.allclose(mean, expected, rtol=1e-6, atol=1e-12)

    # What NVFlare's helper does with the bf16 inputs as they arrive: a bf16 sum, visibly off.
    plain = WeightedAggregationHelper()
    plain.add({"w": a}, 3, "site-1", 0)
    plain.add({"w": b}, 7, "site-2", 0)
    plain_mean = plain.get_result()["w"]
    assert plain_mean.dtype == torch.bfloat16
    assert not torch.allclose(plain_mean.float(), expected, rtol=1e-6, atol=1e-12)

    global_model = FLModel(params={"w": torch.full((64, 64), 0.02)})
    updated = FLModelUtils.update_model(global_model, aggregated)
    assert updated.params["w"].dtype == torch.float32
    assert torch.allclose(updated.params["w"], 0.02 + expected)


def test_disk_offloaded_bf16_results_are_upcast_when_loaded(tmp_path):
    """With --disk_offload results arrive as lazy references to tensors on disk: upcast on load, one by one."""
    from nvflare.app_opt.pt.lazy_tensor_dict import LazyTensorDict
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    a = (torch.randn(32, 32, generator=g) * 1e-3).bfloat16()
    b = (torch.randn(32, 32, generator=g) * 1e-3).bfloat16()
    c = _controller()
    for site, t, steps in (("site-1", a, 3), ("site-2", b, 7)):
        folder = tmp_path / site
        folder.mkdir()
        save_file({"w": t}, str(folder / "w.safetensors"))
        lazy = LazyTensorDict({"w": (str(folder / "w.safetensors"), "w")}, str(folder))
        params = {"w": lazy.make_lazy_ref("w")}
        assert not torch.is_tensor(params["w"])  # still on disk
        assert c._aggregate_one_result(_result(site, params, steps))
    mean = c._get_aggregated_result().params["w"]
    assert mean.dtype == torch.float32
    assert torch.allclose(mean, (a.float() * 3 + b.float() * 7) / 10, rtol=1e-6, atol=1e-12)


def test_server_sends_a_bf16_copy_and_keeps_its_float32_model():
    from fl_server.fedavg import cast_model
    from nvflare.app_common.abstract.fl_model import FLModel

    model = FLModel(params={"w": torch.randn(8, 8), "step": torch.tensor(3)}, current_round=2)
    sent = cast_model(model, "bfloat16")
    assert sent.params["w"].dtype == torch.bfloat16 and sent.params["step"].dtype == torch.int64
    assert sent.current_round == 2
    assert model.params["w"].dtype == torch.float32
    assert cast_model(model, "float32") is model  # the default sends the model as it is, no copy


# --- LoRA ----------------------------------------------------------------------------------------------------------

def test_lora_exchanges_the_adapter_only_and_loads_back(tiny_assets):
    model = apply_lora(load_model(tiny_assets["model"]), **LORA, seed=0)
    sent = exchange_state_dict(model)
    n_layers = model.config.n_layer
    assert len(sent) == 2 * n_layers  # lora_A and lora_B of each block's c_attn
    assert all(".c_attn.lora_A." in k or ".c_attn.lora_B." in k for k in sent), list(sent)
    full = state_dict_bytes(exchange_state_dict(load_model(tiny_assets["model"])))
    assert state_dict_bytes(sent) < full / 10

    # Only the adapter trains.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(sent)

    other = apply_lora(load_model(tiny_assets["model"]), **LORA, seed=1)
    new = {k: v + 0.5 for k, v in sent.items()}
    load_exchanged_state_dict(other, new)
    got = other.state_dict()
    assert all(torch.equal(got[k], v) for k, v in new.items())
    base = load_model(tiny_assets["model"]).state_dict()
    assert torch.equal(got["base_model.model.transformer.wte.weight"], base["transformer.wte.weight"])

    with pytest.raises(ValueError, match="missing"):
        load_exchanged_state_dict(other, dict(list(new.items())[1:]))
    with pytest.raises(ValueError, match="unexpected"):
        load_exchanged_state_dict(load_model(tiny_assets["model"]), new)  # an adapter does not fit a plain model


def test_lora_in_bf16_sends_the_adapter_update(tiny_assets):
    model = apply_lora(load_model(tiny_assets["model"]), **LORA, seed=0)
    received = exchange_state_dict(model, "bfloat16")
    load_exchanged_state_dict(model, received)
    key = next(k for k in received if "lora_B" in k)  # lora_B starts at zero
    with torch.no_grad():
        model.state_dict()[key].add_(0.25)
    update = exchange_state_dict(model, "bfloat16", base=received)
    assert set(update) == set(received) and {v.dtype for v in update.values()} == {torch.bfloat16}
    assert torch.all(update[key] == 0.25)
    assert all(not torch.any(v) for k, v in update.items() if k != key)


def test_lora_seed_makes_the_initial_adapter_reproducible(tiny_assets):
    a = exchange_state_dict(apply_lora(load_model(tiny_assets["model"]), **LORA, seed=0))
    torch.manual_seed(123)
    before = torch.rand(1)
    b = exchange_state_dict(apply_lora(load_model(tiny_assets["model"]), **LORA, seed=0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone


def test_unknown_lora_target_is_one_sentence(tiny_assets):
    with pytest.raises(ValueError, match="names no module"):
        apply_lora(load_model(tiny_assets["model"]), target_modules="q_proj")


# --- the server persistor with LoRA ------------------------------------------------------------------------------

def test_lora_persistor_holds_persists_and_resumes_the_adapter(tiny_assets, tmp_path):
    from nvflare.app_common.abstract.model import ModelLearnableKey, make_model_learnable

    p, ctx, panics = persistor(str(tmp_path), model_name_or_path=tiny_assets["model"], lora=LORA)
    weights = p.load_model(ctx)[ModelLearnableKey.WEIGHTS]
    expected = exchange_state_dict(apply_lora(load_model(tiny_assets["model"]), **LORA, seed=0))
    assert set(weights) == set(expected) and not panics
    assert all(torch.equal(weights[k], expected[k]) for k in expected)

    trained = {k: v + 1.0 for k, v in weights.items()}
    p.save_model(make_model_learnable(trained, {}), ctx)
    ckpt = os.path.join(str(tmp_path), "app_server", "FL_global_model.pt")
    saved = torch.load(ckpt, weights_only=True)
    assert set(saved["model"]) == set(expected)
    assert saved["train_conf"]["lora"] == LORA
    assert os.path.isfile(os.path.join(str(tmp_path), "checkpoints", "job-1", "FL_global_model.pt"))

    resumed, ctx2, panics2 = persistor(str(tmp_path / "again"), model_name_or_path=tiny_assets["model"],
                                        lora=LORA, source_ckpt_file_full_name=ckpt)
    w2 = resumed.load_model(ctx2)[ModelLearnableKey.WEIGHTS]
    assert not panics2 and all(torch.equal(w2[k], trained[k]) for k in trained)

    wrong, ctx3, panics3 = persistor(str(tmp_path / "full"), model_name_or_path=tiny_assets["model"],
                                      source_ckpt_file_full_name=ckpt)
    assert wrong.load_model(ctx3) is None and "LoRA" in panics3[0]


def test_full_persistor_is_unchanged_by_the_options(tiny_assets, tmp_path):
    from nvflare.app_common.abstract.model import ModelLearnableKey

    p, ctx, panics = persistor(str(tmp_path), model_name_or_path=tiny_assets["model"])
    weights = p.load_model(ctx)[ModelLearnableKey.WEIGHTS]
    model = load_model(tiny_assets["model"])
    assert set(weights) == set(exchanged_keys(model)) and "lm_head.weight" not in weights and not panics
    assert {v.dtype for v in weights.values()} == {torch.float32}


# --- the settings: make_job flags -> server and client -------------------------------------------------------------

def _job_config(job, name):
    import json

    app = "app_server" if name == "config_fed_server.json" else "app_site"
    with open(os.path.join(job, app, "config", name)) as f:
        return json.load(f)


def test_make_job_wires_both_options_to_server_and_sites(tmp_path):
    from fl_deploy import make_job
    from fl_site.training import parse_settings

    job = str(tmp_path / "job")
    assert make_job.main(["--out", job, "--sites", "a,b", "--exchange_dtype", "bfloat16", "--lora", "--lora_r", "4",
                          "--lora_target_modules", "c_attn,c_proj"]) == 0
    server = _job_config(job, "config_fed_server.json")
    (workflow,) = server["workflows"]
    assert workflow["args"]["exchange_dtype"] == "bfloat16"
    (persistor,) = [c for c in server["components"] if c["id"] == "persistor"]
    (executor,) = _job_config(job, "config_fed_client.json")["executors"]
    settings = parse_settings(executor["executor"]["args"]["task_script_args"].split())
    assert settings.exchange_dtype == "bfloat16" and settings.lora
    assert persistor["args"]["lora"] == settings.lora_kwargs() == {
        "r": 4, "alpha": 32, "dropout": 0.05, "target_modules": "c_attn,c_proj"}

    plain = str(tmp_path / "plain")
    assert make_job.main(["--out", plain, "--sites", "a,b"]) == 0
    server = _job_config(plain, "config_fed_server.json")
    assert "exchange_dtype" not in server["workflows"][0]["args"]
    assert "lora" not in [c for c in server["components"] if c["id"] == "persistor"][0]["args"]
    (executor,) = _job_config(plain, "config_fed_client.json")["executors"]
    settings = parse_settings(executor["executor"]["args"]["task_script_args"].split())
    assert settings.exchange_dtype == "float32" and settings.lora_kwargs() is None


@pytest.mark.parametrize("bad", [["--exchange_dtype", "float16"], ["--lora", "--lora_r", "0"],
                                 ["--lora", "--lora_dropout", "1"]])
def test_make_job_rejects_bad_option_values(tmp_path, bad):
    from fl_deploy import make_job

    with pytest.raises(SystemExit) as e:
        make_job.main(["--out", str(tmp_path / "job"), "--sites", "a,b", *bad])
    assert e.value.code != 0 and not (tmp_path / "job").exists()


def test_standalone_trainer_with_lora_saves_a_plain_merged_model(tiny_assets, tmp_path):
    import json
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    run = subprocess.run(
        [sys.executable, "-m", "fl_site.trainer", "--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"],
         "--max_steps", "2", "--batch_size", "4", "--eval_samples", "8", "--output_dir", str(tmp_path / "out"),
         "--lora", "--lora_r", "4", "--learning_rate", "1e-2"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    metrics = json.loads("\n".join(lines[max(i for i, line in enumerate(lines) if line == "{"):]))
    model_dir = os.path.join(str(tmp_path), metrics["model_dir"])
    trained = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    base = load_model(tiny_assets["model"]).state_dict()
    assert set(trained) == set(base)
    changed = {k for k in base if not torch.equal(trained[k], base[k])}
    assert changed and all(".attn.c_attn." in k for k in changed), changed


# --- a LoRA job through the provisioned federation -----------------------------------------------------------------


def test_persistor_does_not_pin_the_initial_weights(tiny_assets, tmp_path):
    """After load_model the HF model object is released (it would keep a whole model copy alive all job long);
    a second load_model answers the current global model from the persistence manager."""
    import gc
    import weakref

    from nvflare.app_common.abstract.model import ModelLearnableKey, make_model_learnable

    p, ctx, panics = persistor(str(tmp_path), model_name_or_path=tiny_assets["model"])
    model_ref = weakref.ref(p.model)
    weights = p.load_model(ctx)[ModelLearnableKey.WEIGHTS]
    assert p.model is None and not panics
    trained = {k: v + 1.0 for k, v in weights.items()}
    p.save_model(make_model_learnable(trained, {}), ctx)
    # Written once per round: the job's copy (app folder) is the resume checkpoint's file, linked.
    app_copy = os.path.join(str(tmp_path), "app_server", "FL_global_model.pt")
    assert os.path.samefile(app_copy, os.path.join(str(tmp_path), "checkpoints", "job-1", "FL_global_model.pt"))
    assert torch.equal(torch.load(app_copy, weights_only=True)["model"]["transformer.wte.weight"],
                       trained["transformer.wte.weight"])
    del weights
    gc.collect()
    assert model_ref() is None, "the pretrained model object is still alive"
    again = p.load_model(ctx)[ModelLearnableKey.WEIGHTS]
    assert set(again) == set(trained) and all(torch.equal(again[k], trained[k]) for k in trained)
