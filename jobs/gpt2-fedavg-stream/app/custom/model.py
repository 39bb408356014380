"""Model and tokenizer loading: a Hugging Face hub name (default ``gpt2``) or a local folder."""

import os

DEFAULT_MODEL = "gpt2"


class ModelLoadError(ValueError):
    """The model or tokenizer named by the user cannot be loaded."""


def _looks_local(name_or_path: str) -> bool:
    return os.path.isabs(name_or_path) or name_or_path.startswith(("./", "../", "~")) or os.path.exists(name_or_path)


def check_model_source(name_or_path: str) -> str:
    """Fail early, in one sentence, on a local model path that is not there."""
    if not name_or_path:
        raise ModelLoadError("no model given: pass a Hugging Face name such as 'gpt2' or a local folder")
    if _looks_local(name_or_path):
        path = os.path.expanduser(name_or_path)
        if not os.path.isdir(path):
            raise ModelLoadError(f"model path {name_or_path!r} does not exist or is not a folder")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelLoadError(f"model path {name_or_path!r} has no config.json: save it with save_pretrained()")
        return path
    return name_or_path


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    from transformers import AutoTokenizer

    source = check_model_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise ModelLoadError(f"cannot load tokenizer {name_or_path!r}: {e}") from e
    # GPT-2 has no pad token; padding with EOS is the standard choice (the collator masks it out of the loss).
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str = DEFAULT_MODEL, **kwargs):
    """The pretrained causal LM. Extra kwargs go to ``from_pretrained`` (dtype, attn_implementation...)."""
    from transformers import AutoModelForCausalLM

    source = check_model_source(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {e}") from e


def load_model_and_tokenizer(name_or_path: str = DEFAULT_MODEL, **kwargs):
    return load_model(name_or_path, **kwargs), load_tokenizer(name_or_path)


def tied_aliases(state_dict: dict) -> list:
    """Keys whose tensor shares storage with an earlier key (GPT-2's lm_head.weight is transformer.wte.weight).

    Sending them would move the same bytes twice each way (154 MB per direction for the 124M GPT-2)."""
    seen, aliases = set(), []
    for key, tensor in state_dict.items():
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if ptr in seen:
            aliases.append(key)
        seen.add(ptr)
    return aliases


def exchange_state_dict(model) -> dict:
    """The weights FL exchanges: the state dict on CPU, without tied aliases."""
    sd = model.state_dict()
    skip = set(tied_aliases(sd))
    return {k: v.detach().cpu() for k, v in sd.items() if k not in skip}


def load_exchanged_state_dict(model, params: dict):
    """Load exchanged weights: every key but the tied aliases must be there, and nothing else."""
    result = model.load_state_dict(params, strict=False)
    missing = set(result.missing_keys) - set(tied_aliases(model.state_dict()))
    if missing or result.unexpected_keys:
        raise ValueError(f"weights do not fit the model: missing {sorted(missing)}, "
                         f"unexpected {sorted(result.unexpected_keys)}")
    return model
