"""Tied weights (GPT-2's lm_head.weight is transformer.wte.weight) are exchanged and persisted once."""

import pytest
import torch


def test_exchange_drops_the_alias_and_loading_reties_it(tiny_assets):
    from fl_common.model import exchange_state_dict, load_exchanged_state_dict, load_model, tied_aliases

    model = load_model(tiny_assets["model"])
    full = model.state_dict()
    assert tied_aliases(full) == ["lm_head.weight"]
    sent = exchange_state_dict(model)
    assert set(sent) == set(full) - {"lm_head.weight"}
    saved = sum(t.numel() * t.element_size() for t in full.values()) - \
        sum(t.numel() * t.element_size() for t in sent.values())
    assert saved == full["transformer.wte.weight"].numel() * 4

    other = load_model(tiny_assets["model"])
    new = {k: v + 1.0 for k, v in sent.items()}
    load_exchanged_state_dict(other, new)
    assert torch.equal(other.transformer.wte.weight, new["transformer.wte.weight"])
    assert torch.equal(other.lm_head.weight, new["transformer.wte.weight"])  # still tied, new value


def test_loading_rejects_weights_that_do_not_fit(tiny_assets):
    from fl_common.model import exchange_state_dict, load_exchanged_state_dict, load_model

    model = load_model(tiny_assets["model"])
    sent = exchange_state_dict(model)
    with pytest.raises(ValueError, match="missing.*transformer.wpe.weight"):
        load_exchanged_state_dict(model, {k: v for k, v in sent.items() if k != "transformer.wpe.weight"})
    with pytest.raises(ValueError, match="unexpected.*extra"):
        load_exchanged_state_dict(model, {**sent, "extra": torch.zeros(1)})
