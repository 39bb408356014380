"""Model and tokenizer loading (app_code/model.py)."""

import math

import pytest

from fl_common.model import ModelLoadError, check_model_source, load_model, load_model_and_tokenizer, load_tokenizer


def test_tiny_model_loads_as_a_causal_lm_with_eos_padding(tiny_assets):
    import torch
    from transformers import PreTrainedModel

    model, tokenizer = load_model_and_tokenizer(tiny_assets["model"])
    assert isinstance(model, PreTrainedModel)
    assert type(model).__name__.endswith("ForCausalLM") or type(model).__name__.endswith("LMHeadModel")
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id

    batch = tokenizer(["I thought the film was wonderful.", "Sadly the plot was dull."], padding=True,
                      return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2
    model.eval()
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert out.logits.shape[-1] == model.config.vocab_size
    assert math.isfinite(out.loss.item())


def test_load_model_passes_kwargs_to_from_pretrained(tiny_assets):
    import torch

    model = load_model(tiny_assets["model"], dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64


def test_nonexistent_local_path_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-model")
    for loader in (load_model, load_tokenizer, load_model_and_tokenizer):
        with pytest.raises(ModelLoadError) as e:
            loader(missing)
        assert missing in str(e.value)
        assert "does not exist" in str(e.value)


def test_folder_without_config_json(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelLoadError) as e:
        load_model_and_tokenizer(str(tmp_path))
    assert "config.json" in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_empty_name_is_rejected():
    with pytest.raises(ModelLoadError, match="no model given"):
        load_model_and_tokenizer("")
    with pytest.raises(ModelLoadError):
        check_model_source("")


def test_hub_names_pass_through_unchanged():
    assert check_model_source("gpt2") == "gpt2"
    assert check_model_source("openai-community/gpt2") == "openai-community/gpt2"


def test_model_load_error_is_a_value_error():
    assert issubclass(ModelLoadError, ValueError)
