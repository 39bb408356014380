"""Standalone trainer: one site's shard, trained with exactly the configuration the FL client uses.

    .venv/bin/python -m fl_site.trainer --site_index 0 --num_sites 2 --max_steps 50
    .venv/bin/python -m fl_site.trainer --lora --lora_r 16 ...   # a LoRA adapter; the saved model has it merged in

Every TrainSettings flag of the FL client applies (fl_site/training.py); the flags below pick the shard and the
output folder, which an FL job gets from its site list and NVFlare instead.
"""

import json
import os
import sys
from dataclasses import dataclass, field

from fl_common.model import ModelLoadError, apply_lora, load_model_and_tokenizer
from fl_site.data import DataError, fingerprint, load_site_data
from fl_site.training import TrainSettings, build_trainer, choose_precision, evaluate


@dataclass
class StandaloneSettings:
    site_index: int = field(default=0, metadata={"help": "This site's shard: its position among num_sites."})
    num_sites: int = field(default=1, metadata={"help": "Number of shards the training split is cut into."})
    output_dir: str = field(default="outputs", metadata={"help": "Where <site>/model is saved."})


def parse(argv=None) -> tuple:
    from transformers import HfArgumentParser

    parser = HfArgumentParser((TrainSettings, StandaloneSettings), prog="python -m fl_site.trainer",
                              description=__doc__)
    return parser.parse_args_into_dataclasses(args=argv)


def train(settings: TrainSettings, where: StandaloneSettings, site_name: str = "standalone") -> dict:
    data = load_site_data(settings.dataset, where.site_index, where.num_sites, seed=settings.seed,
                          max_train_samples=settings.max_train_samples, eval_samples=settings.eval_samples,
                          partition=settings.partition, alpha=settings.dirichlet_alpha)
    train_ds, eval_ds = data.train, data.held_out
    print(f"{site_name}: shard {where.site_index}/{where.num_sites}, {len(train_ds)} train rows "
          f"(fingerprint {fingerprint(train_ds)}), {len(eval_ds)} held-out rows; partition {settings.partition}, "
          f"labels {data.label_counts}; training in {choose_precision(settings)[1]}", flush=True)
    model, tokenizer = load_model_and_tokenizer(settings.model)
    if settings.lora:
        model = apply_lora(model, **settings.lora_kwargs())
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, settings, os.path.join(where.output_dir, site_name))
    before = evaluate(trainer)
    result = trainer.train()
    after = evaluate(trainer)
    out_dir = os.path.join(where.output_dir, site_name, "model")
    if settings.lora:
        model.merge_and_unload().save_pretrained(out_dir)  # a plain HF model, like without --lora
    else:
        trainer.save_model(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "eval_loss_before": before["eval_loss"],
        "eval_loss": after["eval_loss"],
        "perplexity": after["perplexity"],
        "model_dir": out_dir,
    }


def main(argv=None) -> int:
    try:
        settings, where = parse(argv)
        metrics = train(settings, where)
    except (DataError, ModelLoadError, ValueError) as e:  # ValueError: unknown flags (HfArgumentParser)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
