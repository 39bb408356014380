"""The FL global model as a Hugging Face model: the server's FL_global_model.pt loaded strictly into the
architecture of the model the job names (or --model), checked tensor by tensor, saved with its tokenizer; a LoRA
job's adapter saved as well, then merged."""

import json
import os
import shutil
import stat

from fl_deploy.export_results.metrics import ExportError, one_line

CHECKPOINT = os.path.join("app_server", "FL_global_model.pt")
SERVER_CONFIG = os.path.join("app_server", "config", "config_fed_server.json")
MODEL_DIR = "global_model"
ADAPTER_DIR = "global_adapter"


def find_workspace(result_dir: str) -> str:
    if not os.path.isdir(result_dir):
        raise ExportError(f"{result_dir} is not a folder: pass a downloaded job result such as results/<job_id>")
    for ws in (os.path.join(result_dir, "workspace"), result_dir):
        if os.path.isfile(os.path.join(ws, CHECKPOINT)):
            return ws
    raise ExportError(
        f"{result_dir} has no workspace/{CHECKPOINT}: not a downloaded job result, or the job ended "
        f"before the server saved a global model"
    )


def job_model(ws: str) -> str:
    """The model the job trained: its persistor's model_name_or_path in the server app's config."""
    path = os.path.join(ws, SERVER_CONFIG)
    try:
        with open(path) as f:
            components = json.load(f).get("components") or []
        return next(c["args"]["model_name_or_path"] for c in components
                    if c.get("id") == "persistor" and "model_name_or_path" in (c.get("args") or {}))
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        raise ExportError(f"cannot tell which model the job trained ({path} names no persistor model): pass "
                          "--model NAME_OR_PATH") from None


def load_checkpoint(path: str) -> dict:
    return read_checkpoint(path)[0]


def read_checkpoint(path: str) -> tuple:
    """(state dict, LoRA settings or None): a LoRA job's persistor records its adapter settings in train_conf."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects that are not tensors
        raise ExportError(f"cannot read {path}: {one_line(e)[:300]}") from None
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} holds no model state dict (expected torch.load(...)['model'] = {{name: tensor}})")
    lora = (data.get("train_conf") or {}).get("lora") if isinstance(data.get("train_conf"), dict) else None
    return state, lora or None


def load_config(name_or_path: str):
    from fl_common.model import ModelLoadError, check_model_source
    from transformers import AutoConfig

    try:
        source = check_model_source(name_or_path)
        return AutoConfig.from_pretrained(source)
    except ModelLoadError as e:
        raise ExportError(one_line(e)) from None
    except (OSError, ValueError, KeyError) as e:
        where = "" if os.path.isdir(os.path.expanduser(name_or_path)) else " (no such local folder; as a hub name)"
        raise ExportError(f"cannot load the model config of {name_or_path!r}{where}: {one_line(e)[:400]}") from None


def load_tokenizer(name_or_path: str):
    from fl_common.model import ModelLoadError, load_tokenizer as app_load_tokenizer

    try:
        return app_load_tokenizer(name_or_path)  # pad token = EOS, as in training
    except (ModelLoadError, OSError, ValueError) as e:
        raise ExportError(f"cannot load the tokenizer of {name_or_path!r}: {one_line(e)[:400]}") from None


def build_model(config, state: dict, name: str):
    """The architecture from `config`, randomly initialised, then every tensor from the FL state dict."""
    import torch
    from transformers import AutoModelForCausalLM

    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    kwargs = {"dtype": dtypes.pop()} if len(dtypes) == 1 else {}
    try:
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    except ValueError as e:
        raise ExportError(f"{name!r} is not a causal language model: {one_line(e)[:300]}") from None

    expected = model.state_dict()
    from fl_common.model import tied_aliases  # FL exchanges and persists tied weights once

    tied = set(tied_aliases(expected))
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise ExportError(f"the checkpoint does not fit the architecture of {name!r} ({'; '.join(parts)}): "
                          f"pass the model the job trained (FL_MODEL)")
    model.load_state_dict(state, strict=False)  # only tied aliases may be absent (checked above)

    # Tied parameters (GPT-2's lm_head = wte) take one value: make sure it is the checkpoint's for every name.
    loaded = model.state_dict()
    differ = [k for k, v in state.items() if not torch.equal(loaded[k], v.to(loaded[k].dtype))]
    if differ:
        raise ExportError(f"the checkpoint's {', '.join(differ[:3])} cannot be kept as saved in {name!r}'s "
                          f"architecture (tied to another tensor with different values)")
    model.eval()
    return model


def build_lora_model(name: str, state: dict, lora: dict):
    """--model's pretrained weights with the FL adapter loaded (a peft model, not merged yet)."""
    from fl_common.model import ModelLoadError, apply_lora, load_exchanged_state_dict, load_model

    try:
        model = apply_lora(load_model(name), **lora)
    except (ModelLoadError, OSError) as e:
        raise ExportError(f"cannot load the pretrained weights of {name!r} (a LoRA job's adapter goes on top of "
                          f"them): {one_line(e)[:300]}") from None
    except (ValueError, TypeError) as e:
        raise ExportError(f"the checkpoint's LoRA settings {lora} do not fit {name!r}: {one_line(e)[:300]}") from None
    try:
        load_exchanged_state_dict(model, state)
    except (ValueError, RuntimeError) as e:  # RuntimeError: shape mismatch
        raise ExportError(f"the LoRA adapter in the checkpoint does not fit {name!r}: {one_line(e)[:300]}: "
                          f"pass the model the job trained (FL_MODEL)") from None
    model.eval()
    return model


def save_adapter(model, dest: str):
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    _readable(tmp)
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _readable(folder: str):
    """safetensors writes 0600; the TensorBoard service and other containers read results as another user."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def save_model(model, tokenizer, dest: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars: the paths printed at the end say enough
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    if tokenizer.pad_token_id is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id  # generate() then pads without a warning
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _readable(tmp)
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
