"""Any Hugging Face causal LM: tiny random Llama (untied embeddings, grouped-query attention), Qwen2 (tied
embeddings, q/k/v biases) and Mistral (untied) through LoRA's target choice, the exchange, the server's checkpoint and resume, and the
exported model (fl_deploy/make_tiny_assets.py --arch makes them). The processes federation runs them as jobs:
tests/integration/test_architectures_processes.py."""

import pytest
import torch
from support import persistor

from fl_common.lora_targets import LoraTargetError, resolve_lora_targets
from fl_common.model import (apply_lora, exchange_state_dict, exchanged_keys, load_exchanged_state_dict, load_model,
                             tied_aliases)

ARCHS = ["llama", "qwen2", "mistral"]


@pytest.mark.parametrize("arch", ["gpt2", *ARCHS])
def test_without_targets_lora_wraps_what_peft_uses_for_the_architecture(arch, tiny_assets, tiny_arch_model):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model = load_model(tiny_assets["model"] if arch == "gpt2" else tiny_arch_model(arch))
    targets, fan_in_fan_out = resolve_lora_targets(model, "")
    assert targets == list(PEFT_DEFAULTS[model.config.model_type])
    assert fan_in_fan_out == (arch == "gpt2")  # GPT-2's projections are Conv1D, the others' nn.Linear
    if arch == "gpt2":
        assert targets == ["c_attn"]  # what the project always used
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in exchanged_keys(apply_lora(model, r=2))}
    assert adapted == set(targets)


def test_a_target_that_names_no_module_is_one_sentence_listing_those_that_exist(tiny_arch_model):
    model = load_model(tiny_arch_model("llama"))
    with pytest.raises(LoraTargetError) as e:
        apply_lora(model, target_modules="q_proj,c_attn")
    message = str(e.value)
    assert "'c_attn' names no module of LlamaForCausalLM (llama)" in message and "\n" not in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert name in message.split("some of: ")[1]
    assert "--lora_target_modules" in message and "FL_LORA_TARGET_MODULES" in message
    model.config.model_type = "no-such-architecture"
    with pytest.raises(LoraTargetError, match="PEFT has no default LoRA target modules for model type "
                                              "'no-such-architecture': set --lora_target_modules"):
        apply_lora(model)


def test_the_server_refuses_the_target_before_any_round(tiny_arch_model, tmp_path):
    p, ctx, panics = persistor(str(tmp_path), model_name_or_path=tiny_arch_model("qwen2"),
                               lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": "c_fc"})
    assert p.load_model(ctx) is None
    assert len(panics) == 1 and panics[0].startswith("server: --lora_target_modules 'c_fc' names no module of "
                                                     "Qwen2ForCausalLM")


@pytest.mark.parametrize("arch", ARCHS)
def test_tied_embeddings_travel_once_and_untied_ones_both(arch, tiny_arch_model):
    model = load_model(tiny_arch_model(arch))
    full = model.state_dict()
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert tied == model.config.tie_word_embeddings == (arch == "qwen2")
    assert tied_aliases(full) == (["lm_head.weight"] if tied else [])
    sent = exchange_state_dict(model)
    assert set(sent) == set(full) - set(tied_aliases(full))

    other = load_model(tiny_arch_model(arch))
    new = {k: v + 1.0 for k, v in sent.items()}
    load_exchanged_state_dict(other, new)
    assert torch.equal(other.get_input_embeddings().weight, new["model.embed_tokens.weight"])
    # Tied: the output embedding follows the input one; untied: it is exchanged in its own right.
    expected_head = new["model.embed_tokens.weight"] if tied else new["lm_head.weight"]
    assert torch.equal(other.get_output_embeddings().weight, expected_head)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_bfloat16_update_added_to_the_float32_model_is_the_step(arch, tiny_arch_model):
    model = load_model(tiny_arch_model(arch))
    received = {k: v.clone() for k, v in exchange_state_dict(model).items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.25)
    update = exchange_state_dict(model, "bfloat16", base=received)
    assert {v.dtype for v in update.values()} == {torch.bfloat16} and set(update) == set(received)
    assert all(torch.allclose(update[k].float(), torch.full_like(update[k].float(), 0.25), atol=1e-3)
               for k in update), "every exchanged tensor moved by the step"


@pytest.mark.parametrize("arch,lora", [("llama", None), ("qwen2", None),
                                       ("llama", {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ""}),
                                       ("qwen2", {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": "q_proj"})],
                         ids=["llama-full", "qwen2-full", "llama-lora-default", "qwen2-lora-q_proj"])
def test_checkpoint_resumes_and_exports_a_model_that_loads_and_generates(arch, lora, tiny_arch_model, tmp_path):
    import os

    from nvflare.app_common.abstract.model import ModelLearnableKey, make_model_learnable
    from transformers import AutoModelForCausalLM

    from fl_deploy.export_results import model_export

    name = tiny_arch_model(arch)
    p, ctx, panics = persistor(str(tmp_path), model_name_or_path=name, lora=lora)
    weights = p.load_model(ctx)[ModelLearnableKey.WEIGHTS]
    trained = {k: v + 0.01 for k, v in weights.items()}
    p.save_model(make_model_learnable(trained, {}), ctx)
    ckpt = os.path.join(str(tmp_path), "checkpoints", "job-1", "FL_global_model.pt")
    resumed, ctx2, panics2 = persistor(str(tmp_path / "again"), model_name_or_path=name, lora=lora,
                                       source_ckpt_file_full_name=ckpt)
    again = resumed.load_model(ctx2)[ModelLearnableKey.WEIGHTS]
    assert not panics and not panics2 and set(again) == set(trained)
    assert all(torch.equal(again[k], trained[k]) for k in trained)

    state, saved_lora = model_export.read_checkpoint(ckpt)
    if lora:
        model = model_export.build_lora_model(name, state, saved_lora).merge_and_unload()
    else:
        model = model_export.build_model(model_export.load_config(name), state, name)
    tokenizer = model_export.load_tokenizer(name)
    model_export.save_model(model, tokenizer, str(tmp_path / "global_model"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "global_model"))
    base = load_model(name).state_dict()
    changed = {k for k, v in loaded.state_dict().items() if not torch.equal(v, base[k])}
    if lora:
        wanted = set(resolve_lora_targets(load_model(name), lora["target_modules"])[0])
        assert changed and {k.rsplit(".", 2)[-2] for k in changed} == wanted, changed
    else:
        assert changed == set(base), "every tensor (a tied one through its alias) carries the global model"
    inputs = tokenizer(["I thought the film was"], return_tensors="pt")
    out = loaded.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_a_site_refuses_the_target_before_training_naming_itself(tiny_arch_model, monkeypatch):
    """The FL client (app_code/fl_site/client.py) at its start: the same sentence, prefixed with the site's name."""
    from types import SimpleNamespace

    from fl_site import client

    monkeypatch.setattr(client, "flare", SimpleNamespace(init=lambda: None, get_site_name=lambda: "site-2"))
    monkeypatch.setattr(client, "keep_print_destinations", lambda: None)
    monkeypatch.setattr(client, "site_rows", lambda *a, **k: pytest.fail("data loaded before the refusal"))
    with pytest.raises(LoraTargetError, match=r"^site-2: --lora_target_modules 'c_fc' names no module of "
                                              r"LlamaForCausalLM \(llama\) .* some of: down_proj, "):
        client.main(["--model", tiny_arch_model("llama"), "--sites", "site-1,site-2", "--lora",
                     "--lora_target_modules", "c_fc"])
