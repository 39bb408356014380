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
        raise ModelLoadError(f"no model given: pass a Hugging Face name such as {DEFAULT_MODEL!r} or a local folder")
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


# --- what FL exchanges ------------------------------------------------------------------------------------------

EXCHANGE_DTYPES = ("float32", "bfloat16")
# LoRA: the LoRA paper's rank range, alpha = 2 r; target modules "" = PEFT's default for the architecture
# (fl_common/lora_targets.py: c_attn, the fused q/k/v projection, for GPT-2; q_proj,v_proj for Llama, Qwen2, Mistral).
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ""}


def is_lora(model) -> bool:
    return any(c.__name__ == "PeftModel" for c in type(model).__mro__)


def apply_lora(model, r: int = LORA_DEFAULTS["r"], alpha: int = LORA_DEFAULTS["alpha"],
               dropout: float = LORA_DEFAULTS["dropout"], target_modules: str = LORA_DEFAULTS["target_modules"],
               seed: int = None):
    """Wrap a causal LM with a LoRA adapter (peft): only the adapter trains, only the adapter is exchanged.

    target_modules: comma-separated module names, "" = PEFT's default for the architecture; a name that matches no
    module raises LoraTargetError (a ValueError) listing those that exist (fl_common/lora_targets.py).
    seed fixes the adapter's random initialisation (lora_A) without touching the global RNG."""
    import torch
    from peft import LoraConfig, get_peft_model

    from fl_common.lora_targets import resolve_lora_targets

    targets, fan_in_fan_out = resolve_lora_targets(model, target_modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM",
        fan_in_fan_out=fan_in_fan_out,  # GPT-2's projections are Conv1D (weights stored transposed)
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return get_peft_model(model, config)


def exchanged_keys(model) -> list:
    """State-dict keys FL exchanges: with LoRA the adapter only, else every tensor but the tied aliases."""
    sd = model.state_dict()
    if is_lora(model):
        return [k for k in sd if ".lora_" in k]
    skip = set(tied_aliases(sd))
    return [k for k in sd if k not in skip]


def state_dict_bytes(params: dict) -> int:
    return sum(t.numel() * t.element_size() for t in params.values())


def exchange_state_dict(model, dtype: str = "float32", base: dict = None) -> dict:
    """The weights FL exchanges (see exchanged_keys), on CPU, floating tensors cast to ``dtype``.

    With ``base`` (the weights received this round) it is the update, trained - base: bfloat16 keeps 8 bits of
    mantissa, enough for an update but not for a weight plus a small step (that step would round away)."""
    import torch

    to = getattr(torch, dtype)
    sd = model.state_dict()
    out = {}
    for k in exchanged_keys(model):
        v = sd[k].detach()
        if base is not None:
            v = v.float() - base[k].to(v.device, torch.float32)
        out[k] = v.to("cpu", to) if v.is_floating_point() else v.cpu()
    return out


def load_exchanged_state_dict(model, params: dict):
    """Load exchanged weights (upcast to the model's dtype): every exchanged key must be there, and nothing else."""
    result = model.load_state_dict(params, strict=False)
    missing = set(result.missing_keys) & set(exchanged_keys(model))
    if missing or result.unexpected_keys:
        raise ValueError(f"weights do not fit the model: missing {sorted(missing)}, "
                         f"unexpected {sorted(result.unexpected_keys)}")
    return model
