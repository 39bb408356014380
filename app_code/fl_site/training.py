"""One configuration surface for local training, shared by the FL client and the standalone trainer.

Defaults are the upstream example's SFTConfig (batch 16, grad accum 2, 1 epoch, lr 2e-4, cosine, nll loss,
gradient checkpointing, report_to none, CPU when no CUDA); every field is a command-line flag.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Optional

from data import DEFAULT_DATASET, TEXT_FIELD
from model import DEFAULT_MODEL, EXCHANGE_DTYPES, LORA_DEFAULTS
from tensor_parts import PART_MB


@dataclass
class TrainSettings:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hugging Face model name or local folder."})
    dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "Hugging Face dataset name or local path."})
    sites: str = field(
        default="", metadata={"help": "FL only: comma-separated participating sites; a site's shard is its position."}
    )
    site_index: int = field(default=0, metadata={"help": "Standalone only: this site's shard index."})
    num_sites: int = field(default=1, metadata={"help": "Standalone only: number of shards."})
    max_length: int = field(default=128, metadata={"help": "Tokens per example (truncation)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps per round; -1 = num_train_epochs."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the local shard per round."})
    batch_size: int = field(default=16, metadata={"help": "Per-device train batch size."})
    grad_accum: int = field(default=2, metadata={"help": "Gradient accumulation steps."})
    learning_rate: float = field(default=2e-4)
    lr_scheduler_type: str = field(default="cosine")
    gradient_checkpointing: bool = field(default=True)
    bf16: Optional[bool] = field(default=None, metadata={"help": "bf16 on GPU; default: on when the GPU has it."})
    max_train_samples: int = field(default=0, metadata={"help": "Cap on the local shard (0 = whole shard)."})
    eval_samples: int = field(default=1000, metadata={"help": "Held-out examples to evaluate (0 = whole split)."})
    seed: int = field(default=42, metadata={"help": "Seed for sharding and training."})
    output_dir: str = field(default="outputs", metadata={"help": "Trainer scratch dir; a sub-folder per site."})
    exchange_only: bool = field(default=False, metadata={"help": "FL only: exchange the model without training."})
    exchange_dtype: str = field(
        default="float32",
        metadata={"choices": list(EXCHANGE_DTYPES),
                  "help": "FL only: dtype on the wire. bfloat16 halves the bytes; sites then send their update "
                          "(trained - received) and the server keeps the global model in float32."},
    )
    part_mb: float = field(default=PART_MB, metadata={"help": "FL only: tensors over this many MiB travel as row "
                                                               "blocks of at most that (0 = whole)."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) on the frozen model; FL "
                                                        "exchanges the adapter only."})
    lora_r: int = field(default=LORA_DEFAULTS["r"], metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=LORA_DEFAULTS["alpha"], metadata={"help": "LoRA scaling (alpha / r)."})
    lora_dropout: float = field(default=LORA_DEFAULTS["dropout"], metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=LORA_DEFAULTS["target_modules"],
        metadata={"help": "Comma-separated module names to adapt (GPT-2: c_attn, c_proj, c_fc)."},
    )

    def lora_kwargs(self):
        """model.apply_lora arguments, or None without --lora (the server persistor gets the same dict)."""
        if not self.lora:
            return None
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": self.lora_target_modules}

    def site_list(self) -> list:
        return [s.strip() for s in self.sites.split(",") if s.strip()]

    def shard_of(self, site_name: str) -> tuple:
        """(site_index, num_sites) of a named FL site."""
        sites = self.site_list()
        if not sites:
            raise ValueError("--sites is empty: the job must list its participating sites")
        if site_name not in sites:
            raise ValueError(f"site {site_name!r} is not among the job's sites {sites}")
        return sites.index(site_name), len(sites)


def parse_settings(argv=None) -> TrainSettings:
    from transformers import HfArgumentParser

    (settings,) = HfArgumentParser(TrainSettings).parse_args_into_dataclasses(args=argv)
    return settings


def use_bf16(settings: TrainSettings) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    return torch.cuda.is_bf16_supported() if settings.bf16 is None else settings.bf16


def sft_config(settings: TrainSettings, site_name: str):
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=os.path.join(settings.output_dir, site_name),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        loss_type="nll",
        gradient_checkpointing=settings.gradient_checkpointing,
        bf16=use_bf16(settings),
        fp16=False,
        max_length=settings.max_length,
        dataset_text_field=TEXT_FIELD,
        # The FL server keeps the global model; per-site checkpoints would only fill the disk.
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )


def build_trainer(model, tokenizer, train_dataset, eval_dataset, settings: TrainSettings, site_name: str):
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=sft_config(settings, site_name),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )


def round_rows(dataset, settings: TrainSettings, rnd: int):
    """The rows of this site's shard that FL round ``rnd`` trains on.

    Trainer.train() restarts its sampler from the same seed at every call, so without this every round would
    train on the same first batches of the shard and never see the rest. Rounds instead walk through seeded
    permutations of the shard: each round takes the next max_steps x batch x accumulation rows, so consecutive
    rounds see new rows until the shard is used up, then a new permutation starts. With max_steps <= 0 (epochs)
    each round gets the whole shard in a new order."""
    import numpy as np

    n = len(dataset)
    if settings.max_steps <= 0:
        return dataset.shuffle(seed=settings.seed + rnd)
    need = settings.max_steps * settings.batch_size * settings.grad_accum
    indices, pos = [], rnd * need
    while len(indices) < need:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, need - len(indices))
        indices.extend(np.random.default_rng(settings.seed + epoch).permutation(n)[offset:offset + take].tolist())
        pos += take
    return dataset.select(indices)


def evaluate(trainer) -> dict:
    """Held-out loss and perplexity of the trainer's current model."""
    loss = float(trainer.evaluate()["eval_loss"])
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
