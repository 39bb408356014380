#!/usr/bin/env python3
"""Compare the exchange options: full float32 weights, bfloat16 on the wire, a LoRA adapter only.

    .venv/bin/python benchmarks/exchange_options.py                   # full, bf16, lora; 2 sites, 3 rounds
    .venv/bin/python benchmarks/exchange_options.py --modes full,lora,lora-bf16 --rounds 2

For each mode it runs the same tiny FL job (the offline tiny GPT-2 and IMDB-shaped data of
scripts/make_tiny_assets.py, same seed, same sites and steps) on a federation provisioned fresh and run from its
kits as local processes (mTLS on loopback, fl_deploy/harness/local_federation.py), then reports:

  bytes per site per direction   what the tensor streamers logged (server->site "consumed", site->server
                                 "produced"; safetensors blobs, so a small header is included)
  state dict as sent             the bytes of the tensors app_code hands to NVFlare
  initial loss                   held-out loss of the starting model (round 1's global_eval_loss, mean over sites)
  final global loss              held-out loss of the job's final global model, exported to Hugging Face format
                                 by fl_deploy/export_results/ and evaluated on the sites' shared held-out split
  124M bytes                     the same state-dict count for the full GPT-2 architecture (GPT2Config(), random
                                 init, offline; no FL run)

Prints a markdown table and writes <out>/exchange_options.csv and exchange_options.md.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time

from fl_deploy import ROOT
from fl_deploy.harness import local_federation


MODES = {  # name -> make_job flags
    "full": [],
    "bf16": ["--exchange_dtype", "bfloat16"],
    "lora": ["--lora"],
    "lora-bf16": ["--lora", "--exchange_dtype", "bfloat16"],
}
SITES = ["site-1", "site-2"]


def sent_bytes(model, mode: str) -> int:
    """Bytes of the state dict app_code sends in this mode (LoRA wraps a copy: the model itself stays plain)."""
    import copy

    from fl_common.model import apply_lora, exchange_state_dict, state_dict_bytes

    if mode.startswith("lora"):
        model = apply_lora(copy.deepcopy(model), seed=0)
    return state_dict_bytes(exchange_state_dict(model, "bfloat16" if mode.endswith("bf16") else "float32"))


def gpt2_124m_bytes(modes: list) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    return {m: sent_bytes(model, m) for m in modes}


def held_out_loss(model_dir: str, assets: dict, train_flags: list, work: str) -> float:
    """The exported global model's loss on the held-out split every site evaluates on (same settings)."""
    from fl_common.model import load_model_and_tokenizer
    from fl_site.data import site_split
    from fl_site.training import build_trainer, evaluate, parse_settings

    settings = parse_settings(["--model", model_dir, "--dataset", assets["dataset"], *train_flags])
    train_ds, eval_ds = site_split(settings.dataset, 0, len(SITES), seed=settings.seed,
                                   eval_samples=settings.eval_samples)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    return evaluate(build_trainer(model, tokenizer, train_ds, eval_ds, settings, work))["eval_loss"]


def run_mode(mode: str, rounds: int, assets: dict, train_flags: list, work: str) -> dict:
    from benchmarks.exchange import streamed_bytes
    from fl_deploy import make_job
    from fl_deploy import export_results

    os.makedirs(work, exist_ok=True)
    fed = local_federation.ProcessFederation(work, SITES, name="options")
    fed.start()
    try:
        fed.wait_for_sites(timeout=300)
        job = os.path.join(work, "job")
        assert make_job.main(["--out", job, "--sites", ",".join(SITES), "--rounds", str(rounds),
                              "--model", assets["model"], "--dataset", assets["dataset"], *train_flags,
                              *MODES[mode], "--transfer", "tensor"]) == 0  # its streamers log the bytes
        start = time.monotonic()
        job_id = fed.nvflare("job", "submit", "-j", job)["data"]["job_id"]
        fed.nvflare("job", "wait", job_id, "--timeout", "1800", timeout=1900)
        elapsed = time.monotonic() - start
        status = fed.nvflare("job", "meta", job_id)["data"]["status"]
        result = fed.nvflare("job", "download", job_id, "-o", os.path.join(work, "dl"))["data"]["download_path"]
        streamed = [streamed_bytes(fed.site_job_log(s, job_id)) for s in SITES]
    finally:
        fed.stop()
    export_results.export(result, assets["model"])
    with open(os.path.join(result, "workspace", "metrics", "round_metrics.jsonl")) as f:
        rounds_logged = [json.loads(line) for line in f if line.strip()]
    first, last = rounds_logged[0], rounds_logged[-1]
    initial = [m["value"] for site in first["sites"] for m in site["metrics"] if m["name"] == "global_eval_loss"]
    aggregated = {m["name"]: m["value"] for m in last.get("aggregated_metrics") or []}
    return {
        "status": status,
        "job_s": round(elapsed, 1),
        "down": statistics.mean(s["down"] for s in streamed if s["down"]),
        "up": statistics.mean(s["up"] for s in streamed if s["up"]),
        "initial_loss": statistics.mean(initial),
        "final_global_loss": held_out_loss(os.path.join(result, "global_model"), assets, train_flags,
                                           os.path.join(work, "eval")),
        "last_round_sites_eval_loss": aggregated.get("eval_loss"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="full,bf16,lora", help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max_steps", type=int, default=8, help="optimizer steps per site per round")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_samples", type=int, default=64, help="held-out examples (the same for every mode)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", f"exchange-options-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        p.error(f"unknown mode(s) {unknown}: choose from {', '.join(MODES)}")
    if args.rounds < 1 or args.max_steps < 1:
        p.error("--rounds and --max_steps must be at least 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.makedirs(args.out, exist_ok=True)
    work_root = tempfile.mkdtemp(prefix="options-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    from fl_common.model import load_model
    from fl_deploy import make_tiny_assets

    assert make_tiny_assets.main(["--out", os.path.join(work_root, "assets")]) == 0
    assets = {"model": os.path.join(work_root, "assets", "model"),
              "dataset": os.path.join(work_root, "assets", "imdb")}
    train_flags = ["--max_steps", str(args.max_steps), "--batch_size", str(args.batch_size),
                   "--eval_samples", str(args.eval_samples)]
    tiny = load_model(assets["model"])
    big = gpt2_124m_bytes(modes)

    rows = []
    for mode in modes:
        print(f"running {mode} ...", flush=True)
        r = run_mode(mode, args.rounds, assets, train_flags, os.path.join(work_root, mode))
        row = {
            "mode": mode, "status": r["status"], "job_s": r["job_s"],
            "tiny_bytes_down_per_site": int(r["down"]), "tiny_bytes_up_per_site": int(r["up"]),
            "tiny_state_dict_bytes": sent_bytes(tiny, mode),
            "initial_loss": round(r["initial_loss"], 4),
            "final_global_loss": round(r["final_global_loss"], 4),
            "last_round_sites_eval_loss": round(r["last_round_sites_eval_loss"], 4)
            if r["last_round_sites_eval_loss"] is not None else "",
            "gpt2_124m_bytes": big[mode],
        }
        rows.append(row)
        print("  " + json.dumps(row), flush=True)

    base = next((r for r in rows if r["mode"] == "full"), rows[0])
    for r in rows:
        r["vs_" + base["mode"]] = round(r["tiny_bytes_up_per_site"] / base["tiny_bytes_up_per_site"], 4)
    with open(os.path.join(args.out, "exchange_options.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = ["| mode | tiny: bytes per site, down / up | tiny: state dict as sent | bytes vs full | "
          "held-out loss, initial -> final global | 124M GPT-2: bytes as sent | job (s) | status |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['mode']} | {r['tiny_bytes_down_per_site']:,} / {r['tiny_bytes_up_per_site']:,} | "
                  f"{r['tiny_state_dict_bytes']:,} | {r['vs_' + base['mode']]:.3f} | "
                  f"{r['initial_loss']} -> {r['final_global_loss']} | "
                  f"{r['gpt2_124m_bytes'] / 1e6:.2f} MB | {r['job_s']} | {r['status']} |")
    header = (f"tiny GPT-2 ({sum(p.numel() for p in tiny.parameters()):,} parameters), {len(SITES)} sites, "
              f"{args.rounds} rounds x {args.max_steps} steps (batch {args.batch_size}), held-out "
              f"{args.eval_samples} examples, {os.cpu_count()} CPUs, processes from provisioned kits (mTLS)")
    with open(os.path.join(args.out, "exchange_options.md"), "w") as f:
        f.write(header + "\n\n" + "\n".join(md) + "\n")
    print("\n" + header + "\n\n" + "\n".join(md))
    print(f"\nwritten: {os.path.join(args.out, 'exchange_options.csv')}, exchange_options.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
