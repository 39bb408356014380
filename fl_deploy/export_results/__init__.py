"""Turn a downloaded job result into things people use: a Hugging Face model, a CSV of the metrics, two plots.

    python scripts/export_results.py results/<job_id>                 # the model the job names
    python scripts/export_results.py results/<job_id> --model /assets/tiny/model

RESULT_DIR is what scripts/submit_job.py downloads (results/<job_id>/, holding workspace/); the workspace folder
itself is accepted too. Reads workspace/app_server/FL_global_model.pt and workspace/metrics/round_metrics.jsonl,
and writes into RESULT_DIR:

  global_model/              the FL global model in Hugging Face format (config.json, safetensors, tokenizer,
                             pad token = EOS): AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained.
                             The architecture comes from --model's config (not its weights); the FL state dict is
                             loaded into it strictly and checked tensor by tensor.
                             A LoRA job (make_job.py --lora) persists only its adapter: the adapter is loaded onto
                             --model's pretrained weights and merged in (peft merge_and_unload), so global_model/
                             is still a plain model that loads without peft.
  global_adapter/            LoRA jobs only: the adapter itself (peft format, a few MB), for
                             PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(--model), this folder).
  metrics.csv                one row per (round, site): round, site, train_loss, eval_loss, global_eval_loss,
                             perplexity, held_out_rows; then per round a row with site "global": the server's.
                             ROUNDS ARE 1-BASED here (round 1 = the first round; NVFlare and round_metrics.jsonl
                             count from 0). global_eval_loss is the held-out loss of the global model each site
                             received at the start of the round, eval_loss / perplexity that of the site's model
                             after its local training, both on the site's held_out_rows rows (the shared split, or
                             with --data_source site its own). The "global" row's global_eval_loss and eval_loss
                             are the sites' values weighted by their held_out_rows (its held_out_rows: their sum),
                             its train_loss the mean weighted by training steps. An empty cell = not reported.
  plots/train_loss.png       training loss per site (and the weighted mean) against the round.
  plots/global_perplexity.png
                             held-out perplexity of the global model, exp(global_eval_loss), against the number of
                             rounds completed: 0 = the initial model (evaluated at the start of round 1), k = the
                             global model after k rounds. The global model after the last round is never evaluated
                             by the job, so the last point (hollow marker) is exp(the server-aggregated eval_loss of
                             the last round): the sites' trained models, weighted by held-out rows as above.
  plots/round_time_and_bytes.png
                             per round: the server's round duration and each site's round time (receiving the
                             global model -> its result handed back), and the MB each site received and sent
                             (tensor bytes), from the system/* scalars in workspace/tb_events/.
  system_metrics.csv         every system/* scalar of the job's TensorBoard: round (1-based), run (a site, or the
                             server's run), metric, value (app_code/fl_site/round_meter.py, fl_server/round_stats.py).

A resumed job's result (scripts/submit_job.py --resume) also holds earlier_rounds.jsonl, the rounds of the jobs it
continues (fl_deploy/lineage.py): metrics.csv and the plots then cover the whole training run.

--model defaults to the model the job itself names (its persistor's model_name_or_path in
workspace/app_server/config/config_fed_server.json); the state dict has to fit its architecture exactly.
Exit status 2 with a one-line `error: ...` on bad input (no checkpoint, unloadable model config, a checkpoint
that does not fit the architecture, malformed metrics); nothing is written in that case.
"""

import argparse
import os
import sys

from fl_deploy.export_results.metrics import (ROUND_METRICS, SYSTEM_CSV, ExportError, metric_rows, one_line,
                                              read_run_metrics, read_system_metrics, write_csv, write_system_csv)
from fl_deploy.export_results.model_export import (ADAPTER_DIR, CHECKPOINT, MODEL_DIR, build_lora_model, build_model,
                                                   find_workspace, job_model, load_config, load_tokenizer,
                                                   read_checkpoint, save_adapter, save_model)
from fl_deploy.export_results.plots import (PERPLEXITY_PNG, SYSTEM_PNG, TRAIN_LOSS_PNG, plot_global_perplexity,
                                            plot_round_time_and_bytes, plot_train_loss)



def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="export_results.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dir", metavar="RESULT_DIR", help="a downloaded job result: results/<job_id>")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="the model the job trained: Hugging Face name or local folder with config.json (default: "
                        "the one the job's configuration names)")
    return p.parse_args(argv)


def export(result_dir: str, model_name: str = None) -> list:
    """Validate and load everything first, then write; return the paths written."""
    ws = find_workspace(result_dir)
    model_name = model_name or job_model(ws)
    run_metrics = read_run_metrics(result_dir, ws)
    rows = metric_rows(run_metrics) if run_metrics is not None else None
    system = read_system_metrics(ws)
    state, lora = read_checkpoint(os.path.join(ws, CHECKPOINT))
    config = load_config(model_name)
    tokenizer = load_tokenizer(model_name)
    model = build_lora_model(model_name, state, lora) if lora else build_model(config, state, model_name)

    written = []
    try:
        if lora:
            save_adapter(model, os.path.join(result_dir, ADAPTER_DIR))
            written.append(os.path.join(result_dir, ADAPTER_DIR))
            model = model.merge_and_unload()
        dest = os.path.join(result_dir, MODEL_DIR)
        save_model(model, tokenizer, dest)
        written.append(dest)
        title = os.path.basename(os.path.normpath(result_dir))
        if system:
            os.makedirs(os.path.join(result_dir, "plots"), exist_ok=True)
            write_system_csv(system, os.path.join(result_dir, SYSTEM_CSV))
            plot_round_time_and_bytes(system, os.path.join(result_dir, SYSTEM_PNG), title)
            written += [os.path.join(result_dir, SYSTEM_CSV), os.path.join(result_dir, SYSTEM_PNG)]
        if rows is None:
            print(f"warning: no {os.path.join(ws, ROUND_METRICS)}: metrics.csv and the metric plots not written",
                  file=sys.stderr)
            return written
        csv_path = os.path.join(result_dir, "metrics.csv")
        write_csv(rows, csv_path)
        written.append(csv_path)
        os.makedirs(os.path.join(result_dir, "plots"), exist_ok=True)
        for rel, plot in ((TRAIN_LOSS_PNG, plot_train_loss), (PERPLEXITY_PNG, plot_global_perplexity)):
            plot(rows, os.path.join(result_dir, rel), title)
            written.append(os.path.join(result_dir, rel))
    except OSError as e:
        raise ExportError(f"cannot write into {result_dir}: {one_line(e)}") from None
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        written = export(args.result_dir, args.model)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0

