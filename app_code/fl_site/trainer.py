"""Standalone trainer: one site's shard, trained with exactly the configuration the FL client uses.

    python app_code/trainer.py --model gpt2 --dataset stanfordnlp/imdb --site_index 0 --num_sites 2 --max_steps 50
    python app_code/trainer.py --lora --lora_r 16 ...      # a LoRA adapter; the saved model has it merged in
"""

import json
import os
import sys

from data import DataError, fingerprint, site_split
from model import ModelLoadError, apply_lora, load_model_and_tokenizer
from training import build_trainer, evaluate, parse_settings


def train(settings, site_name: str = "standalone") -> dict:
    train_ds, eval_ds = site_split(
        settings.dataset,
        settings.site_index,
        settings.num_sites,
        seed=settings.seed,
        max_train_samples=settings.max_train_samples,
        eval_samples=settings.eval_samples,
    )
    print(f"{site_name}: shard {settings.site_index}/{settings.num_sites}, {len(train_ds)} train rows "
          f"(fingerprint {fingerprint(train_ds)}), {len(eval_ds)} held-out rows", flush=True)
    model, tokenizer = load_model_and_tokenizer(settings.model)
    if settings.lora:
        model = apply_lora(model, **settings.lora_kwargs())
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, settings, site_name)
    before = evaluate(trainer)
    result = trainer.train()
    after = evaluate(trainer)
    out_dir = os.path.join(settings.output_dir, site_name, "model")
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
        settings = parse_settings(argv)
        metrics = train(settings)
    except (DataError, ModelLoadError, ValueError) as e:  # ValueError: unknown flags (HfArgumentParser)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
