#!/usr/bin/env python3
"""Generate the FedAvg + tensor-streaming job folder from app_code/ with the NVFlare recipe API.

    python scripts/make_job.py                       # -> jobs/gpt2-fedavg-stream (sites from project.yml)
    python scripts/make_job.py --rounds 5 --max_steps 100 --out /tmp/myjob

Every job setting has its home here: sites (project.yml by default), rounds, model, dataset, streaming,
training budget. The committed jobs/ folder is this script's output with the defaults; a test keeps them equal.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_CODE = os.path.join(ROOT, "app_code")
DEFAULT_JOB_DIR = os.path.join(ROOT, "jobs", "gpt2-fedavg-stream")
JOB_NAME = "gpt2-fedavg-stream"
# How the weights move. The default was chosen by scripts/benchmark_exchange.py (README, "Benchmark"): at 2-4 sites
# x 124M, offload rounds were 2.4x faster than the tensor streamers and the server peak 1.4-1.6x lower, growing by
# 0.5 model copies per site instead of 1.5.
TRANSFERS = {
    "offload": "NVFlare's FOBS streaming (download references); the server downloads each result to disk (TMPDIR) "
               "and aggregates it tensor by tensor (enable_tensor_disk_offload)",
    "tensor": "NVFlare's tensor streamers (TensorServerStreamer / TensorClientStreamer), results in memory",
    "memory": "NVFlare's FOBS streaming, results in memory",
}
# What app/custom must hold: the client script, what it imports, the server's workflow and persistor; nothing else.
CUSTOM_FILES = ["client.py", "controller.py", "data.py", "in_place_mean.py", "model.py", "persistor.py",
                "shared_broadcast.py", "tensor_parts.py", "training.py"]


def sites_from_project(project_yml: str) -> list:
    """The project's sites, read and checked the way provisioning reads them."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import provision

    try:
        return provision.participants(provision.load_project(project_yml))["sites"]
    except provision.ProjectError as e:
        raise SystemExit(f"error: {e}; pass --sites site-1,site-2 or point --project at a valid project file")


def parse_args(argv=None):
    sys.path.insert(0, APP_CODE)
    from controller import AGGREGATIONS, BROADCASTS
    from model import EXCHANGE_DTYPES, LORA_DEFAULTS
    from tensor_parts import PART_MB

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_JOB_DIR, help="job folder to write (replaced if it exists)")
    p.add_argument("--project", default=os.path.join(ROOT, "project.yml"), help="sites come from its clients")
    p.add_argument("--sites", default="", help="comma-separated site names (overrides --project)")
    p.add_argument("--rounds", type=int, default=3, help="FedAvg rounds")
    p.add_argument("--model", default="gpt2", help="HF model name or a path that exists on server and sites")
    p.add_argument("--dataset", default="stanfordnlp/imdb", help="HF dataset name or a path on each site")
    p.add_argument("--transfer", choices=list(TRANSFERS), default="offload",
                   help="how the weights move: " + "; ".join(f"{k}: {v}" for k, v in TRANSFERS.items()))
    p.add_argument("--broadcast", choices=list(BROADCASTS), default="shared",
                   help="how the server sends the global model with --transfer offload or memory: "
                        + "; ".join(f"{k}: {v}" for k, v in BROADCASTS.items())
                        + " (the tensor streamers always send per site)")
    p.add_argument("--max_steps", type=int, default=200, help="optimizer steps per site per round (-1 = epochs)")
    p.add_argument("--num_train_epochs", type=float, default=1.0)
    p.add_argument("--max_train_samples", type=int, default=0, help="cap on each site's shard (0 = whole)")
    p.add_argument("--eval_samples", type=int, default=1000, help="held-out examples evaluated per round")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=None,
                   help="sites' learning rate (default: app_code/training.py's 2e-4; LoRA usually wants ~1e-3)")
    p.add_argument("--exchange_only", action="store_true", help="no training: benchmark the model exchange")
    p.add_argument("--round_timeout", type=int, default=3600,
                   help="seconds a round waits for all sites before aggregating those that answered (0 = forever)")
    p.add_argument("--min_sites", type=int, default=1,
                   help="fewest site results a round may aggregate after the timeout; fewer stops the job")
    p.add_argument("--initial_ckpt", default="",
                   help="server-side path of a persisted FL_global_model.pt to start from (resume)")
    p.add_argument("--start_round", type=int, default=0,
                   help="first round to run (resume); the job runs rounds start_round..rounds-1")
    p.add_argument("--tensor_send_timeout", type=float, default=300.0, help="seconds per streamed transfer")
    p.add_argument("--server_memory_gc_rounds", type=int, default=0,
                   help="server: gc + malloc_trim every N rounds (0 = never)")
    p.add_argument("--exchange_dtype", choices=EXCHANGE_DTYPES, default="float32",
                   help="dtype of the exchanged weights: bfloat16 halves the bytes both ways (sites send their "
                        "update, the server aggregates and persists in float32)")
    p.add_argument("--part_mb", type=float, default=PART_MB,
                   help="tensors over this many MiB travel both ways as row blocks of at most that, so no receiver "
                        "holds a whole large tensor (GPT-2's wte) per message (0 = whole tensors)")
    p.add_argument("--aggregation", choices=list(AGGREGATIONS), default="in-place",
                   help="how the server averages the results: "
                        + "; ".join(f"{k}: {v}" for k, v in AGGREGATIONS.items()))
    p.add_argument("--lora", action="store_true",
                   help="sites train a LoRA adapter (peft) on the frozen model; only the adapter is exchanged")
    p.add_argument("--lora_r", type=int, default=LORA_DEFAULTS["r"], help="LoRA rank")
    p.add_argument("--lora_alpha", type=int, default=LORA_DEFAULTS["alpha"], help="LoRA alpha (scale = alpha/r)")
    p.add_argument("--lora_dropout", type=float, default=LORA_DEFAULTS["dropout"])
    p.add_argument("--lora_target_modules", default=LORA_DEFAULTS["target_modules"],
                   help="comma-separated module names to adapt (GPT-2: c_attn, c_proj, c_fc)")
    args = p.parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.site_names = [s.strip() for s in args.sites.split(",") if s.strip()] or sites_from_project(args.project)
    if not args.site_names:
        p.error("no sites: the project has no clients and --sites is empty")
    if len(set(args.site_names)) != len(args.site_names):
        p.error(f"duplicate site names in {args.site_names}")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if not 1 <= args.min_sites <= len(args.site_names):
        p.error(f"--min_sites must be in 1..{len(args.site_names)} (the number of sites)")
    if args.round_timeout < 0:
        p.error("--round_timeout must be >= 0")
    if not 0 <= args.start_round < args.rounds:
        p.error(f"--start_round must be in 0..{args.rounds - 1} (--rounds is the total, resumed rounds included)")
    if args.learning_rate is not None and args.learning_rate <= 0:
        p.error("--learning_rate must be positive")
    if args.part_mb < 0:
        p.error("--part_mb must be >= 0")
    if args.server_memory_gc_rounds < 0:
        p.error("--server_memory_gc_rounds must be >= 0")
    if args.lora and (args.lora_r < 1 or args.lora_alpha < 1 or not 0 <= args.lora_dropout < 1):
        p.error("--lora_r and --lora_alpha must be at least 1 and --lora_dropout in [0, 1)")
    return args


def lora_settings(args):
    """The LoRA adapter the sites and the server persistor build (model.apply_lora arguments), or None."""
    if not args.lora:
        return None
    return {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
            "target_modules": args.lora_target_modules}


def effective_broadcast(args) -> str:
    """--broadcast applies to FOBS streaming only: the tensor streamers replace the task's tensors themselves."""
    return "per-site" if args.transfer == "tensor" else args.broadcast


def train_args(args) -> str:
    from tensor_parts import PART_MB  # APP_CODE is on sys.path since parse_args

    flags = {
        "model": args.model,
        "dataset": args.dataset,
        "sites": ",".join(args.site_names),
        "max_steps": args.max_steps,
        "num_train_epochs": args.num_train_epochs,
        "max_train_samples": args.max_train_samples,
        "eval_samples": args.eval_samples,
        "batch_size": args.batch_size,
    }
    if args.learning_rate is not None:
        flags["learning_rate"] = args.learning_rate
    if args.exchange_dtype != "float32":
        flags["exchange_dtype"] = args.exchange_dtype
    if args.part_mb != PART_MB:
        flags["part_mb"] = args.part_mb
    for key, value in (lora_settings(args) or {}).items():
        flags[f"lora_{key}"] = value
    line = " ".join(f"--{k} {v}" for k, v in flags.items())
    return line + (" --exchange_only" if args.exchange_only else "") + (" --lora" if args.lora else "")


def build_recipe(args):
    sys.path.insert(0, APP_CODE)
    from controller import FedAvgWithDeadline
    from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
    from nvflare.client.config import ExchangeFormat
    from nvflare.recipe import add_experiment_tracking
    from persistor import PretrainedModelPersistor

    class Recipe(FedAvgRecipe):
        def _create_controller(self, persistor_id, model_params, model_aggregator):
            # The recipe builds FedAvg with a dozen settings of its own; keep them all and only swap in the
            # subclass, so the job stays what FedAvgRecipe makes plus round deadlines.
            controller = super()._create_controller(persistor_id, model_params, model_aggregator)
            controller.__class__ = FedAvgWithDeadline
            controller.round_timeout, controller.min_sites = args.round_timeout, args.min_sites
            controller.exchange_dtype = args.exchange_dtype
            controller.broadcast_mode = effective_broadcast(args)
            controller.part_mb, controller.aggregation = args.part_mb, args.aggregation
            controller._targets, controller._answered, controller._shared, controller._into = [], set(), None, {}
            return controller

    n = len(args.site_names)
    recipe = Recipe(
        name=JOB_NAME,
        # Streaming waits for every participant to fetch the task: fewer than all sites would time out.
        min_clients=n,
        num_rounds=args.rounds - args.start_round,
        model_persistor=PretrainedModelPersistor(
            model_name_or_path=args.model, source_ckpt_file_full_name=args.initial_ckpt or None,
            lora=lora_settings(args),
        ),
        server_expected_format=ExchangeFormat.PYTORCH,
        # Relative to APP_CODE (the export runs there) so the job refers to custom/client.py, not this host.
        train_script="client.py",
        train_args=train_args(args),
        key_metric="global_eval_loss",
        key_metric_mode="min",
        enable_tensor_disk_offload=args.transfer == "offload",
        server_memory_gc_rounds=args.server_memory_gc_rounds,
    )
    add_experiment_tracking(recipe, tracking_type="tensorboard")
    if args.transfer == "tensor":
        recipe.enable_tensor_streaming(tensor_send_timeout=args.tensor_send_timeout)
    return recipe


def set_start_round(server_config: str, start_round: int):
    """FedAvg takes start_round but the recipe does not expose it: set it on the exported workflow."""
    with open(server_config) as f:
        config = json.load(f)
    (workflow,) = [w for w in config["workflows"] if w["id"] == "controller"]
    workflow["args"]["start_round"] = start_round
    with open(server_config, "w") as f:
        json.dump(config, f, indent=4)


def export(args) -> str:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(APP_CODE)
        try:
            build_recipe(args).export(tmp)
        finally:
            os.chdir(cwd)
        src = os.path.join(tmp, JOB_NAME)
        # Deploy to the named sites only: a site outside the list has no shard and must not be handed the job.
        meta_path = os.path.join(src, "meta.json")
        with open(meta_path) as f:
            meta = json.load(f)
        meta["deploy_map"] = {"app": ["server"] + args.site_names}
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=4)
        if args.start_round:
            set_start_round(os.path.join(src, "app", "config", "config_fed_server.json"), args.start_round)
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        shutil.copytree(src, args.out)
    return args.out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = export(args)
    resume = f" from round {args.start_round + 1}" if args.start_round else ""
    print(f"job folder: {out} (sites: {', '.join(args.site_names)}; rounds: {args.rounds}{resume}; "
          f"transfer: {args.transfer}, broadcast {effective_broadcast(args)}; exchange: "
          f"{'LoRA adapter' if args.lora else 'full model'}, {args.exchange_dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
