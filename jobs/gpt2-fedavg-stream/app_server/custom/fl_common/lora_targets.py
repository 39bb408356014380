"""Which modules of a causal LM a LoRA adapter wraps: the names the user gives, or PEFT's default for the model's
architecture (peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, keyed by
``config.model_type``: c_attn for GPT-2, q_proj and v_proj for Llama, Qwen2, Mistral). A name matches a module as
PEFT matches it: the module's full name, or its last dotted components."""


class LoraTargetError(ValueError):
    """--lora_target_modules names a module the model does not have (or PEFT has no default for it)."""


def _wrappable(model) -> list:
    """(full name, module) of every module LoRA can wrap here: Linear, GPT-2's Conv1D, Embedding."""
    import torch
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, Conv1D, torch.nn.Embedding)
    return [(name, m) for name, m in model.named_modules() if name and isinstance(m, kinds)]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def resolve_lora_targets(model, target_modules: str = "") -> tuple:
    """(target names, fan_in_fan_out) for peft's LoraConfig: the comma-separated ``target_modules``, or PEFT's
    default for ``model.config.model_type`` when it is empty. fan_in_fan_out is true when every wrapped module is a
    Conv1D (weights stored transposed, as GPT-2's).

    Raises LoraTargetError, one sentence listing the modules LoRA can wrap, for a name that matches none of them
    or an architecture PEFT has no default for."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS
    from transformers.pytorch_utils import Conv1D

    modules = _wrappable(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = [t.strip() for t in (target_modules or "").split(",") if t.strip()]
    available = ", ".join(sorted({name.rsplit(".", 1)[-1] for name, _ in modules}))
    fix = f"set --lora_target_modules (FL_LORA_TARGET_MODULES in .env) to some of: {available}"
    if not targets:
        targets = list(PEFT_DEFAULTS.get(model_type) or [])
        if not targets:
            raise LoraTargetError(f"PEFT has no default LoRA target modules for model type {model_type!r}: {fix}")
    unknown = [t for t in targets if not any(_matches(name, t) for name, _ in modules)]
    if unknown:
        raise LoraTargetError(f"--lora_target_modules {','.join(unknown)!r} names no module of "
                              f"{type(model).__name__} ({model_type}) that LoRA can wrap: {fix}")
    wrapped = [m for name, m in modules if any(_matches(name, t) for t in targets)]
    return targets, all(isinstance(m, Conv1D) for m in wrapped)
