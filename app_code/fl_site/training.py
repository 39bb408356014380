"""One configuration surface for a site's training (TrainSettings), shared by the FL client, the standalone
trainer and the job generator (scripts/make_job.py), and the TRL trainer built from it.

Defaults are the upstream example's SFTConfig (batch 16, grad accum 2, lr 2e-4, cosine, nll loss, gradient
checkpointing, report_to none, CPU when no CUDA), with 200 optimizer steps per round.

What carries from one FL round to the next is explicit (begin_round): the local optimizer (OPTIMIZER_STATES) and
the learning-rate schedule (LR_SCHEDULES); docs/design.md gives the benchmark that chose the defaults.
"""

import functools
import math
import os
from dataclasses import dataclass, field, fields
from typing import Optional

from fl_site.data import DEFAULT_DATASET, PARTITIONS, TEXT_FIELD
from fl_site.site_data import DATA_SOURCES
from fl_common.model import DEFAULT_MODEL, EXCHANGE_DTYPES, LORA_DEFAULTS
from fl_common.tensor_parts import PART_MIB


@dataclass
class TrainSettings:
    """What a site trains and how, for one FL job or one standalone run: every field is a flag of the FL client
    (the job's ``train_args``), of scripts/make_job.py and of the standalone trainer, and an ``FL_<FIELD>`` line
    in .env for scripts/submit_job.py. Training defaults are the upstream example's SFTConfig."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hugging Face model name, or a folder that exists on "
                                                                "the server and at every site."})
    dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "Hugging Face dataset name, or a path that "
                                                                    "exists at every site."})
    data_source: str = field(default="shared", metadata={
        "choices": list(DATA_SOURCES),
        "help": "Where each site's rows come from: " + "; ".join(f"{k}: {v}" for k, v in DATA_SOURCES.items()) + "."})
    sites: str = field(
        default="", metadata={"help": "Comma-separated sites of the job; a site's shard is its position "
                                      "(make_job: default project.yml's sites)."}
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per example (truncation)."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps per site per round (FL) or in all "
                                                          "(standalone); -1 = num_train_epochs over the shard."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the shard per round when "
                                                                   "max_steps is -1."})
    batch_size: int = field(default=16, metadata={"help": "Examples per device per step (train and eval)."})
    grad_accum: int = field(default=2, metadata={"help": "Gradient accumulation steps per optimizer step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (LoRA usually wants ~1e-3)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Hugging Face scheduler name."})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Trade compute for activation memory."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warm-up over this fraction of the "
                                                               "schedule's steps (the round's, or the job's with "
                                                               "--lr_schedule job)."})
    optimizer_state: str = field(
        default="carry",
        metadata={"choices": ["reset", "carry"],
                  "help": "FL: the site's AdamW at each round: reset (a new one, moments at zero, every round) or "
                          "carry (the same one and its moments from the site's previous round)."},
    )
    lr_schedule: str = field(
        default="job",
        metadata={"choices": ["job", "round"],
                  "help": "FL: job (one schedule over the job's rounds x max_steps: round r continues where "
                          "round r-1 ended, warm-up once, decay to the job's last step; a resumed job continues it) "
                          "or round (the schedule restarts every round)."},
    )
    bf16: Optional[bool] = field(default=None, metadata={"help": "bf16 training on GPU; default: on when the GPU "
                                                                 "has it natively (compute capability >= 8.0)."})
    max_train_samples: int = field(default=0, metadata={"help": "Cap on each site's shard (0 = whole shard)."})
    eval_samples: int = field(default=1000, metadata={"help": "Held-out examples evaluated per round "
                                                              "(0 = whole split)."})
    seed: int = field(default=42, metadata={"help": "Seed for sharding and training."})
    partition: str = field(default="iid", metadata={"choices": list(PARTITIONS),
                                                    "help": "How the training split is cut into the sites' shards: "
                                                            + "; ".join(f"{k}: {v}" for k, v in PARTITIONS.items())
                                                            + ". The held-out split is the same at every site."})
    dirichlet_alpha: float = field(default=0.5, metadata={"help": "--partition label-skew: the Dirichlet "
                                                                  "concentration alpha (> 0)."})
    exchange_only: bool = field(default=False, metadata={"help": "FL only: exchange the model without training "
                                                                 "(benchmarks)."})
    exchange_dtype: str = field(
        default="float32",
        metadata={"choices": list(EXCHANGE_DTYPES),
                  "help": "FL only: dtype on the wire. bfloat16 halves the bytes; sites then send their update "
                          "(trained - received) and the server keeps the global model in float32."},
    )
    part_mib: float = field(default=PART_MIB, metadata={"help": "FL only: tensors over this many MiB travel both "
                                                                 "ways as row blocks of at most that (0 = whole)."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) on the frozen model; FL "
                                                        "exchanges the adapter only."})
    lora_r: int = field(default=LORA_DEFAULTS["r"], metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=LORA_DEFAULTS["alpha"], metadata={"help": "LoRA scaling (alpha / r)."})
    lora_dropout: float = field(default=LORA_DEFAULTS["dropout"], metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=LORA_DEFAULTS["target_modules"],
        metadata={"help": "Comma-separated module names to adapt; empty: PEFT's default for the model's "
                          "architecture (GPT-2: c_attn; Llama, Qwen2, Mistral: q_proj,v_proj)."},
    )

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError("--learning_rate must be positive")
        if self.part_mib < 0:
            raise ValueError("--part_mib must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("--warmup_ratio must be in [0, 1)")
        if self.dirichlet_alpha <= 0:
            raise ValueError("--dirichlet_alpha must be positive")
        for f in fields(self):
            if "choices" in f.metadata and getattr(self, f.name) not in f.metadata["choices"]:
                raise ValueError(f"--{f.name} must be one of {', '.join(f.metadata['choices'])}, "
                                 f"got {getattr(self, f.name)!r}")
        if self.lora and (self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1):
            raise ValueError("--lora_r and --lora_alpha must be at least 1 and --lora_dropout in [0, 1)")

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

    def changed(self) -> dict:
        """{field: value} of the fields that differ from their defaults (what a job's train_args must carry)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


def parse_settings(argv=None) -> TrainSettings:
    """TrainSettings from command-line flags (the FL client's train_args)."""
    from transformers import HfArgumentParser

    (settings,) = HfArgumentParser(TrainSettings).parse_args_into_dataclasses(args=argv)
    return settings


def as_flags(values: dict) -> list:
    """["--name", "value", ...] that parse back to these TrainSettings values (booleans as true/false)."""
    flags = []
    for name, value in values.items():
        flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bf16 in their tensor cores


def choose_precision(settings: TrainSettings) -> tuple:
    """(bf16: bool, why: str) for training on this host.

    No CUDA: fp32, whatever --bf16 says (the Trainer's CPU bf16 is slower than fp32 here). --bf16 true / false: as
    asked. Unset: bf16 only where the GPU has it natively, compute capability >= 8.0. torch.cuda.is_bf16_supported()
    is not the test: it defaults to including_emulation=True and says yes on T4 / V100 / RTX 20xx (7.x), which
    emulate bf16 far slower than fp32."""
    import torch

    if not torch.cuda.is_available():
        return False, "fp32: no CUDA device"
    capability = tuple(torch.cuda.get_device_capability())
    gpu = f"compute capability {capability[0]}.{capability[1]}"
    if settings.bf16 is not None:
        return settings.bf16, f"{'bf16' if settings.bf16 else 'fp32'}: --bf16 {str(settings.bf16).lower()} ({gpu})"
    if capability >= NATIVE_BF16_CAPABILITY:
        return True, f"bf16: native on this GPU ({gpu})"
    return False, f"fp32: no native bf16 on this GPU ({gpu} < 8.0; --bf16 true forces emulated bf16)"


def use_bf16(settings: TrainSettings) -> bool:
    return choose_precision(settings)[0]


def sft_config(settings: TrainSettings, output_dir: str):
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_ratio,  # < 1: a fraction of the schedule's steps (TrainingArguments)
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


def build_trainer(model, tokenizer, train_dataset, eval_dataset, settings: TrainSettings, output_dir: str):
    """TRL's SFTTrainer for these settings; output_dir is its scratch folder (no checkpoints are saved there)."""
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=sft_config(settings, output_dir),
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


def steps_per_round(settings: TrainSettings, num_rows: int) -> int:
    """Optimizer steps one trainer.train() takes on ``num_rows`` rows: max_steps, or with max_steps <= 0 the
    Trainer's own count for num_train_epochs (Trainer.set_initial_training_values: ceil(batches / accumulation)
    updates per epoch, at least 1)."""
    if settings.max_steps > 0:
        return settings.max_steps
    batches = math.ceil(num_rows / settings.batch_size)
    per_epoch = max(math.ceil(batches / settings.grad_accum), 1)
    return math.ceil(settings.num_train_epochs * per_epoch)


def _shifted(lr_lambda, offset: int, step: int) -> float:
    return lr_lambda(step + offset)


def lr_schedule(optimizer, settings: TrainSettings, first_step: int, total_steps: int):
    """The Hugging Face schedule ``lr_scheduler_type`` over ``total_steps`` (warm-up: warmup_ratio of them),
    started at ``first_step``: the first optimizer step it drives uses the rate of step ``first_step``.

    Raises ValueError for a scheduler that is not a step function (reduce_lr_on_plateau)."""
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import get_scheduler

    for group in optimizer.param_groups:  # the schedule scales the peak rate, whatever an earlier one left in 'lr'
        group["lr"] = group["initial_lr"] = settings.learning_rate
    full = get_scheduler(settings.lr_scheduler_type, optimizer=optimizer,
                         num_warmup_steps=math.ceil(total_steps * settings.warmup_ratio),
                         num_training_steps=total_steps)
    if not isinstance(full, LambdaLR):
        raise ValueError(f"--lr_scheduler_type {settings.lr_scheduler_type} is not a function of the step; "
                         "use cosine, linear, constant or another step schedule")
    return LambdaLR(optimizer, [functools.partial(_shifted, f, first_step) for f in full.lr_lambdas])


def begin_round(trainer, shard, settings: TrainSettings, rnd: int, job_rounds: int) -> dict:
    """Make ``trainer`` ready for FL round ``rnd`` (0-based, counted over the whole job, resumed rounds included) of
    a job of ``job_rounds`` rounds: this round's rows of the shard (round_rows), the optimizer and the schedule.

    optimizer_state reset: a new optimizer (Trainer.create_optimizer: AdamW, zero moments); carry: the trainer's
    optimizer as the last round left it. lr_schedule round: the schedule spans this round's steps and starts at
    its step 0; job: it spans job_rounds x steps_per_round and starts at rnd x steps_per_round, so a resumed job
    (rnd = start_round) continues where the interrupted one was. Returns {first_step, total_steps, lr}: the lr
    the round's first optimizer step uses."""
    trainer.train_dataset = round_rows(shard, settings, rnd)
    steps = steps_per_round(settings, len(trainer.train_dataset))
    if settings.optimizer_state == "reset" or trainer.optimizer is None:
        trainer.optimizer = None
        trainer.create_optimizer()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    first, total = (rnd * steps, job_rounds * steps) if settings.lr_schedule == "job" else (0, steps)
    trainer.lr_scheduler = lr_schedule(optimizer, settings, first, total)
    return {"first_step": first, "total_steps": total, "lr": trainer.lr_scheduler.get_last_lr()[0]}


def job_rounds(global_model) -> int:
    """Rounds of the whole job from a received FLModel: NVFlare's FedAvg sends start_round and total_rounds =
    the rounds this (possibly resumed) job runs, so the job's total is their sum."""
    if global_model.total_rounds is None:
        raise ValueError("the server's task carries no total_rounds: the job-wide schedule needs it "
                         "(use --lr_schedule round with this workflow)")
    return (global_model.start_round or 0) + global_model.total_rounds


def evaluate(trainer) -> dict:
    """Held-out loss and perplexity of the trainer's current model."""
    loss = float(trainer.evaluate()["eval_loss"])
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
