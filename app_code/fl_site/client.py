"""FL client (NVFlare Client API): receive the global model, evaluate it, train on this site's shard, send it back.

Runs inside an NVFlare job (the job's train_args are TrainSettings flags, fl_site/training.py); the same training
runs standalone with `python -m fl_site.trainer`.
"""

import os
import sys

import nvflare.client as flare
from nvflare.client.tracking import SummaryWriter

from fl_common.held_out import HELD_OUT_ROWS
from fl_common.lora_targets import LoraTargetError
from fl_common.model import apply_lora, exchange_state_dict, load_exchanged_state_dict, load_model_and_tokenizer
from fl_common.tensor_parts import join_parts, split_large
from fl_site.print_redirect import keep_print_destinations
from fl_site.round_meter import RoundMeter
from fl_site.site_data import site_rows
from fl_site.training import begin_round, build_trainer, choose_precision, evaluate, job_rounds, parse_settings


def main(argv=None):
    settings = parse_settings(argv)
    keep_print_destinations()  # NVFlare's print-to-log drops print(file=...): dill's bytecode scan ended up in the log
    flare.init()
    site = flare.get_site_name()
    settings.shard_of(site)  # a site outside the job's list stops here, whatever the data source

    model, tokenizer = load_model_and_tokenizer(settings.model)
    if settings.lora:
        try:
            model = apply_lora(model, **settings.lora_kwargs())
        except LoraTargetError as e:  # before any training: the admin reads it with the site's name
            raise LoraTargetError(f"{site}: {e}") from None
    trainer = None
    if not settings.exchange_only:
        data, described = site_rows(settings, site)  # its shard of the shared dataset, or its own data
        print(described, flush=True)
        print(f"{site}: training in {choose_precision(settings)[1]}; optimizer {settings.optimizer_state} per "
              f"round, lr schedule per {settings.lr_schedule}", flush=True)
        trainer = build_trainer(model, tokenizer, data.train, data.held_out, settings, os.path.join("outputs", site))
        shard = trainer.train_dataset  # tokenized once; each round trains on its own rows of it
        print(f"{site}: trainer ready, {len(shard)} rows tokenised", flush=True)  # fl_deploy/timeline.py reads it
    writer = SummaryWriter()
    meter = RoundMeter(writer)  # system/* metrics per round (round_meter.py)

    while flare.is_running():
        global_model = flare.receive()
        rnd = global_model.current_round
        received = join_parts(global_model.params)
        meter.round_started(rnd, global_model.params)
        print(f"{site}: round {rnd} received {len(received)} tensors", flush=True)
        load_exchanged_state_dict(model, received)

        if settings.exchange_only:
            # Weight 1: FedAvg weights by steps, and zero steps from every site would divide by zero.
            sent = outgoing(model, settings, received)
            meter.round_done(sent["params"])
            flare.send(flare.FLModel(**sent, meta={"NUM_STEPS_CURRENT_ROUND": 1}))
            continue

        # The received model is the new global model: its held-out loss is the federation's progress.
        global_metrics = evaluate(trainer)
        plan = begin_round(trainer, shard, settings, rnd, job_rounds(global_model))  # rows, optimizer, schedule
        with meter.training(trainer):
            result = trainer.train()
        steps = trainer.state.global_step
        local_metrics = evaluate(trainer)

        writer.add_scalar("global_eval_loss", global_metrics["eval_loss"], rnd)
        writer.add_scalar("global_perplexity", global_metrics["perplexity"], rnd)
        writer.add_scalar("train_loss", result.training_loss, rnd)
        writer.add_scalar("eval_loss", local_metrics["eval_loss"], rnd)
        writer.add_scalar("perplexity", local_metrics["perplexity"], rnd)
        print(f"{site}: round {rnd} steps={steps} lr={plan['lr']:.3g} train_loss={result.training_loss:.4f} "
              f"global_eval_loss={global_metrics['eval_loss']:.4f} eval_loss={local_metrics['eval_loss']:.4f}",
              flush=True)

        sent = outgoing(model, settings, received)
        meter.round_done(sent["params"])
        flare.send(
            flare.FLModel(
                **sent,
                metrics={
                    "train_loss": result.training_loss,
                    "global_eval_loss": global_metrics["eval_loss"],
                    "eval_loss": local_metrics["eval_loss"],
                    "perplexity": local_metrics["perplexity"],
                    HELD_OUT_ROWS: len(data.held_out),  # the weight of its losses in the server's mean
                },
                meta={"NUM_STEPS_CURRENT_ROUND": steps},
            )
        )


def outgoing(model, settings, received: dict) -> dict:
    """params and params_type to send: float32 weights, or in bfloat16 the update relative to what was received
    (the server adds the sites' weighted mean update to its float32 global model). Large tensors go in blocks."""
    if settings.exchange_dtype == "float32":
        params, kind = exchange_state_dict(model), flare.ParamsType.FULL
    else:
        params, kind = exchange_state_dict(model, settings.exchange_dtype, base=received), flare.ParamsType.DIFF
    return {"params": split_large(params, settings.part_mib), "params_type": kind}


if __name__ == "__main__":
    sys.exit(main())
