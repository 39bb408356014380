#!/usr/bin/env python3
"""Training throughput: the FL client's training loop against the standalone trainer, fp32 and bf16.

    .venv/bin/python benchmarks/training.py                    # GPU: 124M GPT-2; no GPU: the tiny model
    .venv/bin/python benchmarks/training.py --rounds 2 --steps 20 --precision bf16
    .venv/bin/python benchmarks/training.py --fl inprocess     # without NVFlare (see below)

No network, no Docker. Both sides train with app_code/fl_site/training.py on the same data, batch size, sequence length
and total number of optimizer steps:

  standalone  what app_code/fl_site/trainer.py runs: evaluate, then one trainer.train() of rounds x steps optimizer steps;
  FL          app_code/fl_site/client.py itself, in NVFlare's simulator with one site (--fl sim): each round it receives
              the global model, loads it, evaluates it, runs trainer.train() for `steps` steps (the trainer is
              built once), evaluates, sends the weights back. The figures come from the client's log (the
              Trainer's printed logs, timestamped by NVFlare) and the server's round log.
              --fl inprocess (automatic when nvflare is not importable) drives the same functions round by round
              in one process instead: build_trainer, load_exchanged_state_dict, evaluate, train, exchange_state_dict.

Figures (tokens = non-padding tokens trained, TRL's num_tokens):

  train tok/s      tokens / wall seconds inside trainer.train(): the Trainer's per-call set-up plus its step loop
  loop tok/s       tokens / the Trainer's own train_runtime: the step loop only
  end-to-end tok/s FL only: tokens / (train() seconds + rounds x the rest of a steady round): fetching and
                   downloading the task, loading the weights, two evaluations, sending the weights back and
                   aggregating, as the server's round log times them. Steady = rounds 1..R-1: round 0 also holds
                   the client's one-time start-up, which the standalone figure leaves out too.
  FL / standalone  train tok/s of FL over train tok/s of standalone; the target is >= 0.95

Model: gpt2-124m (the full GPT-2 architecture, random init, built offline) when CUDA is available, else tiny;
or a local model folder. Data: IMDB-shaped reviews made here, long enough that every row fills --max_length.
Writes <out>/training_speed.csv, training_speed.md and the FL logs; prints the table.
"""

import argparse
import ast
import csv
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from fl_deploy import ROOT

SITE = "site-1"
TARGET = 0.95
RESULT_TAG = "BENCHMARK_RESULT "
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class BenchmarkError(RuntimeError):
    """A measurement could not be made; the message says which and where its log is."""


# ---------------------------------------------------------------- assets


def make_assets(model: str, work: str, n_train: int, n_test: int) -> tuple:
    """(model folder, dataset folder). tiny / gpt2-124m are built here; anything else is a local model folder."""
    from benchmarks import exchange as benchmark_exchange
    from fl_deploy import make_tiny_assets

    if model in ("tiny", "gpt2-124m"):
        model_path, _ = benchmark_exchange.make_model(model, os.path.join(work, "assets"))
    else:
        model_path = model
    # Ten reviews a row (20 sentences or more): every row is truncated to max_length, so no step trains on
    # padding and every step trains the same number of tokens on both sides.
    rng = random.Random(0)
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    from datasets import Dataset

    for split, n in (("train", n_train), ("test", n_test)):
        labels = [i % 2 for i in range(n)]
        texts = [" ".join(make_tiny_assets.review(rng, y) for _ in range(10)) for y in labels]
        Dataset.from_dict({"text": texts, "label": labels}).to_parquet(os.path.join(data, f"{split}.parquet"))
    return model_path, data


def settings_flags(args, model_path: str, data: str, bf16: bool) -> list:
    """Training flags both sides share; the job passes the same ones to client.py (make_job + --bf16)."""
    return ["--model", model_path, "--dataset", data, "--batch_size", str(args.batch_size),
            "--eval_samples", str(args.eval_samples), "--max_train_samples", "0", "--bf16", str(bf16)]


# ---------------------------------------------------------------- workers (run in a fresh process each)


def _trained_tokens(trainer) -> int:
    """TRL's running count of non-padding tokens trained by this trainer (over all its train() calls)."""
    counts = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h and "loss" in h]
    return int(counts[-1]) if counts else 0


def worker_standalone(flags: list, total_steps: int, output_dir: str) -> dict:
    from fl_common.model import load_model_and_tokenizer
    from fl_site.data import site_split
    from fl_site.training import build_trainer, evaluate, parse_settings

    settings = parse_settings(flags + ["--max_steps", str(total_steps)])
    train_ds, eval_ds = site_split(settings.dataset, 0, 1, seed=settings.seed,
                                   max_train_samples=settings.max_train_samples, eval_samples=settings.eval_samples)
    model, tokenizer = load_model_and_tokenizer(settings.model)
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, settings, os.path.join(output_dir, "standalone"))
    evaluate(trainer)  # fl_site/trainer.py evaluates first too (and it warms the device up the same way)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    return {"rounds": [{"steps": trainer.state.global_step, "tokens": _trained_tokens(trainer), "train_s": wall,
                        "loop_s": float(result.metrics["train_runtime"])}],
            "bf16": bool(trainer.args.bf16)}


def worker_fl_inprocess(flags: list, rounds: int, steps: int, output_dir: str) -> dict:
    """The client's round, without NVFlare: the global model is the weights the site sent last round."""
    from fl_common.model import exchange_state_dict, load_exchanged_state_dict, load_model_and_tokenizer
    from fl_site.data import site_split
    from fl_site.training import build_trainer, evaluate, parse_settings

    settings = parse_settings(flags + ["--sites", SITE, "--max_steps", str(steps)])
    site_index, num_sites = settings.shard_of(SITE)
    model, tokenizer = load_model_and_tokenizer(settings.model)
    train_ds, eval_ds = site_split(settings.dataset, site_index, num_sites, seed=settings.seed,
                                   max_train_samples=settings.max_train_samples, eval_samples=settings.eval_samples)
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, settings, os.path.join(output_dir, SITE))
    global_params = exchange_state_dict(model)
    out, tokens_before = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        load_exchanged_state_dict(model, global_params)
        evaluate(trainer)
        t1 = time.perf_counter()
        result = trainer.train()
        t2 = time.perf_counter()
        evaluate(trainer)
        t3 = time.perf_counter()
        global_params = exchange_state_dict(model)
        t4 = time.perf_counter()
        tokens = _trained_tokens(trainer)
        out.append({"steps": trainer.state.global_step, "tokens": tokens - tokens_before, "train_s": t2 - t1,
                    "loop_s": float(result.metrics["train_runtime"]), "fetch_s": 0.0, "load_eval_s": t1 - t0,
                    "local_eval_s": t3 - t2, "send_s": t4 - t3, "round_s": t4 - t0})
        tokens_before = tokens
    return {"rounds": out, "bf16": bool(trainer.args.bf16)}


def run_worker(kind: str, config: dict, log_path: str, timeout: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--worker-config", json.dumps(config)]
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout,
                                  env={**os.environ, **OFFLINE_ENV})
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"{kind} run took more than {timeout} s (log: {log_path})")
        log.write(proc.stdout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise BenchmarkError(f"{kind} run failed with exit code {proc.returncode} (log: {log_path})")


# ---------------------------------------------------------------- FL under the NVFlare simulator

_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_LINE = re.compile(_TS + r" - \S+ - \w+ - (.*)$")


def _seconds(stamp: str) -> float:
    day, clock = stamp.split(" ")
    hms, ms = clock.split(",")
    return time.mktime(time.strptime(f"{day} {hms}", "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def parse_site_log(text: str, site: str = SITE) -> list:
    """Per round: steps, tokens, train()/loop seconds and the client's phases, from the site's log.txt.

    client.py prints "<site>: round N received", then the Trainer prints a dict per evaluation, per step and
    one with train_runtime at the end of train(), then client.py prints "<site>: round N steps=...".
    trainer.train() runs from the global evaluation's line to the train_runtime line."""
    rounds, cur, tokens_before = [], None, 0
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        t, msg = _seconds(m.group(1)), m.group(2)
        if msg.startswith(f"{site}: round ") and " received " in msg:
            cur = {"recv": t, "evals": [], "tokens": None, "train_end": None, "loop_s": None}
        elif cur is not None and msg.startswith("{'"):
            try:
                logs = ast.literal_eval(msg)
            except (ValueError, SyntaxError):
                continue
            if "eval_loss" in logs:
                cur["evals"].append(t)
            elif "train_runtime" in logs:
                cur["train_end"], cur["loop_s"] = t, float(logs["train_runtime"])
            elif "num_tokens" in logs and "loss" in logs:
                cur["tokens"] = int(float(logs["num_tokens"]))
        elif cur is not None and msg.startswith(f"{site}: round ") and " steps=" in msg:
            steps = int(re.search(r" steps=(\d+)", msg).group(1))
            if len(cur["evals"]) != 2 or cur["train_end"] is None or cur["tokens"] is None:
                raise BenchmarkError(f"round {len(rounds)} of {site}'s log lacks the evaluation / training lines")
            global_eval, local_eval = cur["evals"]
            rounds.append({"steps": steps, "tokens": cur["tokens"] - tokens_before,
                           "train_s": cur["train_end"] - global_eval, "loop_s": cur["loop_s"],
                           "load_eval_s": global_eval - cur["recv"], "local_eval_s": local_eval - cur["train_end"],
                           "recv": cur["recv"], "done": t})
            tokens_before, cur = cur["tokens"], None
    return rounds


def parse_server_rounds(text: str) -> list:
    """Wall-clock start of each FedAvg round, and the end of the last, from the server's log.txt."""
    marks, last = [], None
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m:
            last = _seconds(m.group(1))
        elif re.match(r"\s*(Round \d+ started|Finished FedAvg)\.", raw) and last is not None:
            marks.append(last)
    return marks


def merge_rounds(site_rounds: list, marks: list) -> list:
    """Add the server's view: task fetch + download before a round's training, send + aggregation after it."""
    if len(marks) != len(site_rounds) + 1:
        raise BenchmarkError(f"server log has {len(marks)} round marks for {len(site_rounds)} rounds")
    for i, r in enumerate(site_rounds):
        r["fetch_s"] = r.pop("recv") - marks[i]
        r["send_s"] = marks[i + 1] - r.pop("done")
        r["round_s"] = marks[i + 1] - marks[i]
    return site_rounds


def run_fl_sim(args, model_path: str, data: str, bf16: bool, work: str, out: str, tag: str) -> dict:
    from fl_deploy import make_job

    job, ws = os.path.join(work, f"job-{tag}"), os.path.join(work, f"ws-{tag}")
    make_job.main(["--out", job, "--sites", SITE, "--rounds", str(args.rounds), "--max_steps", str(args.steps),
                   "--model", model_path, "--dataset", data, "--round_timeout", "0",
                   "--eval_samples", str(args.eval_samples), "--batch_size", str(args.batch_size),
                   "--max_train_samples", "0", "--bf16", str(bf16).lower()])

    sim_log = os.path.join(out, f"fl-{tag}-simulator.log")
    cmd = [sys.executable, "-m", "nvflare.cli", "simulator", job, "-w", ws, "-n", "1", "-t", "1"]
    with open(sim_log, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, timeout=args.timeout,
                                  env={**os.environ, **OFFLINE_ENV})
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"the FL simulator took more than {args.timeout} s (log: {sim_log})")
    site_log, server_log = os.path.join(ws, SITE, "log.txt"), os.path.join(ws, "server", "log.txt")
    for src, name in ((site_log, "site"), (server_log, "server")):
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out, f"fl-{tag}-{name}.log"))
    if proc.returncode != 0 or not os.path.exists(site_log):
        raise BenchmarkError(f"the FL simulator failed with exit code {proc.returncode} (log: {sim_log})")
    with open(site_log) as f:
        site_rounds = parse_site_log(f.read())
    with open(server_log) as f:
        marks = parse_server_rounds(f.read())
    if len(site_rounds) != args.rounds:
        raise BenchmarkError(f"the FL client finished {len(site_rounds)} of {args.rounds} rounds (log: {sim_log})")
    return {"rounds": merge_rounds(site_rounds, marks), "bf16": bf16}


# ---------------------------------------------------------------- figures


def summarize(precision: str, run: str, mode: str, result: dict) -> dict:
    if result["bf16"] != (precision == "bf16"):
        raise BenchmarkError(f"{precision} {run}: the trainer ran with bf16={result['bf16']}")
    rounds = result["rounds"]
    tokens = sum(r["tokens"] for r in rounds)
    train_s = sum(r["train_s"] for r in rounds)
    loop_s = sum(r["loop_s"] for r in rounds)
    row = {"precision": precision, "run": run, "mode": mode, "rounds": len(rounds),
           "steps": sum(r["steps"] for r in rounds), "tokens": tokens,
           "train_s": round(train_s, 6), "loop_s": round(loop_s, 6),
           "train_tok_s": round(tokens / train_s, 1), "loop_tok_s": round(tokens / loop_s, 1),
           "setup_s_per_call": round((train_s - loop_s) / len(rounds), 3),
           "e2e_s": "", "e2e_tok_s": "", "ratio_train": "", "ratio_loop": "", "ratio_e2e": ""}
    for key in ("tokens", "train_s", "loop_s"):
        if row[key] <= 0:
            raise BenchmarkError(f"{precision} {run}: no {key} measured")
    steady = rounds[1:] or rounds
    if "round_s" in rounds[0]:
        # Every round's training plus, per round, what a steady round spends around it. Round 0's own overhead
        # also holds the client's one-time start-up (process, model, data, trainer), which standalone leaves out.
        overhead = statistics.mean(r["round_s"] - r["train_s"] for r in steady)
        row["e2e_s"] = round(train_s + len(rounds) * overhead, 3)
        row["e2e_tok_s"] = round(tokens / row["e2e_s"], 1)
        for phase in ("fetch_s", "load_eval_s", "train_s", "local_eval_s", "send_s", "round_s"):
            row[f"round_{phase}"] = round(statistics.mean(r[phase] for r in steady), 3)
    return row


def median_run(rows: list) -> dict:
    """The run with the median train tok/s (the lower one of the middle two), and how many runs there were."""
    ranked = sorted(rows, key=lambda r: r["train_tok_s"])
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["runs"] = len(rows)
    return row


def add_ratios(rows: list):
    for fl in (r for r in rows if r["run"] == "FL"):
        (alone,) = [r for r in rows if r["run"] == "standalone" and r["precision"] == fl["precision"]]
        fl["ratio_train"] = round(fl["train_tok_s"] / alone["train_tok_s"], 3)
        fl["ratio_loop"] = round(fl["loop_tok_s"] / alone["loop_tok_s"], 3)
        fl["ratio_e2e"] = round(fl["e2e_tok_s"] / alone["train_tok_s"], 3)


def markdown(rows: list, header: str, skipped: list) -> str:
    lines = [header, "",
             "| precision | run | steps | tokens | train() s | train tok/s | loop tok/s | set-up s / call "
             "| end-to-end tok/s | FL ÷ standalone: train / loop / end-to-end |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["run"] != "FL" else (
            f"**{r['ratio_train']:.3f}** {'✓' if r['ratio_train'] >= TARGET else '✗'} / {r['ratio_loop']:.3f} / "
            f"{r['ratio_e2e']:.3f}")
        e2e = f"{r['e2e_tok_s']:,.0f}" if r["e2e_tok_s"] != "" else "—"
        lines.append(f"| {r['precision']} | {r['run']} ({r['mode']}) | {r['steps']} | {r['tokens']:,} | "
                     f"{r['train_s']:.2f} | {r['train_tok_s']:,.0f} | {r['loop_tok_s']:,.0f} | "
                     f"{r['setup_s_per_call']:.3f} | {e2e} | {ratio} |")
    fl_rows = [r for r in rows if r["run"] == "FL"]
    if fl_rows:
        lines += ["", "FL round, mean of the steady rounds 1..R-1 (seconds):", "",
                  "| precision | fetch + download | load + global eval | train() | local eval | send + aggregate "
                  "| round |", "|---|---|---|---|---|---|---|"]
        for r in fl_rows:
            lines.append(f"| {r['precision']} | {r['round_fetch_s']:.2f} | {r['round_load_eval_s']:.2f} | "
                         f"{r['round_train_s']:.2f} | {r['round_local_eval_s']:.2f} | {r['round_send_s']:.2f} | "
                         f"{r['round_round_s']:.2f} |")
    lines += [""] + [f"- skipped: {s}" for s in skipped]
    lines += [f"- target: FL train tok/s ≥ {TARGET} × standalone (✓ met, ✗ not met). train = wall time of "
              "trainer.train() (set-up + step loop); loop = the Trainer's train_runtime; set-up = their "
              "difference, paid once by standalone and once per round by FL; end-to-end = FL tokens / (train() "
              "seconds + rounds × the rest of a steady round), against standalone train tok/s. FL token counts come "
              "from the Trainer's printed log (4 significant digits)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="training.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto",
                   help="auto (gpt2-124m with CUDA, tiny without), gpt2-124m, tiny, or a local model folder")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--fl", default="auto", choices=["auto", "sim", "inprocess"],
                   help="FL side: NVFlare simulator running app_code/fl_site/client.py, or its functions in one process "
                        "(auto: sim when nvflare is importable)")
    p.add_argument("--rounds", type=int, default=3, help="FL rounds (standalone trains rounds x steps at once)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per FL round (default: 50 with CUDA, "
                                                          "10 without)")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure each side this many times, alternating the order, and report the median run")
    p.add_argument("--batch_size", type=int, default=16, help="per-device batch (grad accum stays training.py's)")
    p.add_argument("--eval_samples", type=int, default=160, help="held-out rows each FL evaluation runs over")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed to each run")
    p.add_argument("--out", default=None, help="results folder (default results/training-speed-<timestamp>)")
    p.add_argument("--worker", choices=["standalone", "fl-inprocess"], help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (round 0 holds the client's start-up; end-to-end uses the rest)")
    if min(1 if args.steps is None else args.steps, args.repeat, args.batch_size, args.eval_samples, args.timeout) < 1:
        p.error("--steps, --repeat, --batch_size, --eval_samples and --timeout must be positive")
    args.precisions = [s.strip() for s in args.precision.split(",") if s.strip()]
    if not args.precisions or set(args.precisions) - {"fp32", "bf16"} or len(set(args.precisions)) != len(
            args.precisions):
        p.error(f"--precision takes fp32, bf16 or fp32,bf16, not {args.precision!r}")
    if args.model not in ("auto", "tiny", "gpt2-124m"):
        if not os.path.isfile(os.path.join(os.path.expanduser(args.model), "config.json")):
            p.error(f"--model {args.model!r} is not tiny, gpt2-124m or a local model folder with a config.json")
        args.model = os.path.abspath(os.path.expanduser(args.model))
    return args


def worker_main(args) -> int:
    config = json.loads(args.worker_config)
    if args.worker == "standalone":
        result = worker_standalone(config["flags"], config["rounds"] * config["steps"], config["output_dir"])
    else:
        result = worker_fl_inprocess(config["flags"], config["rounds"], config["steps"], config["output_dir"])
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    try:
        return benchmark(args)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def benchmark(args) -> int:
    os.environ.update(OFFLINE_ENV)
    import torch

    from fl_site.training import TrainSettings, use_bf16

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    if args.model == "auto":
        args.model = "gpt2-124m" if cuda else "tiny"
        print(f"model: {args.model} ({'CUDA found' if cuda else 'no GPU: the tiny model'})")
    if args.steps is None:
        args.steps = 50 if cuda else 10
    mode = args.fl
    if mode == "auto":
        try:
            import nvflare  # noqa: F401

            mode = "sim"
        except ImportError:
            mode = "inprocess"
            print("nvflare is not importable: FL runs the client's functions in-process (no simulator)")
    skipped = []
    runnable = []
    for precision in args.precisions:
        wanted = precision == "bf16"
        if use_bf16(TrainSettings(bf16=wanted)) != wanted:
            why = (f"{precision}: fl_site/training.py use_bf16() turns bf16 on only on a CUDA device with bf16 "
                   f"support ({device})")
            print(f"skipped {why}")
            skipped.append(why)
        else:
            runnable.append(precision)
    if not runnable:
        print("error: nothing to measure: every requested precision is skipped on this machine", file=sys.stderr)
        return 1

    out = os.path.abspath(args.out or os.path.join(ROOT, "results", f"training-speed-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-training-") as work:
        n_train = args.rounds * args.steps * args.batch_size * TrainSettings().grad_accum
        model_path, data = make_assets(args.model, work, n_train, args.eval_samples)
        for precision in runnable:
            flags = settings_flags(args, model_path, data, precision == "bf16")
            config = {"flags": flags, "rounds": args.rounds, "steps": args.steps,
                      "output_dir": os.path.join(work, "outputs")}
            runs = {"standalone": [], "FL": []}
            for rep in range(args.repeat):
                # Alternate the order, so a neighbour's load on a shared machine hits both sides alike.
                for run in (("standalone", "FL") if rep % 2 == 0 else ("FL", "standalone")):
                    tag = precision + (f"-{rep + 1}" if args.repeat > 1 else "")
                    if run == "standalone":
                        print(f"{tag}: standalone, {args.rounds * args.steps} steps ...", flush=True)
                        result = run_worker("standalone", config, os.path.join(out, f"standalone-{tag}.log"),
                                            args.timeout)
                        runs[run].append(summarize(precision, run, "trainer.train()", result))
                    elif mode == "sim":
                        print(f"{tag}: FL, client.py in the NVFlare simulator, {args.rounds} rounds x "
                              f"{args.steps} steps ...", flush=True)
                        result = run_fl_sim(args, model_path, data, precision == "bf16", work, out, tag)
                        runs[run].append(summarize(precision, run, "client.py in NVFlare simulator", result))
                    else:
                        print(f"{tag}: FL, client functions in-process, {args.rounds} rounds x {args.steps} "
                              f"steps ...", flush=True)
                        result = run_worker("fl-inprocess", config, os.path.join(out, f"fl-{tag}-inprocess.log"),
                                            args.timeout)
                        runs[run].append(summarize(precision, run, "client functions in-process", result))
            for run in ("standalone", "FL"):
                rows.append(median_run(runs[run]))
    add_ratios(rows)

    header = (f"Training throughput, {args.model if os.path.sep not in args.model else 'model ' + args.model}, "
              f"{device}; {args.rounds} rounds x {args.steps} steps, batch {args.batch_size} x accum "
              f"{TrainSettings().grad_accum}, max_length {TrainSettings().max_length}, eval {args.eval_samples} rows, "
              f"median of {args.repeat} run(s) a side; "
              f"torch {torch.__version__}; {time.perf_counter() - started:.0f} s in all")
    text = markdown(rows, header, skipped)
    with open(os.path.join(out, "training_speed.md"), "w") as f:
        f.write(text)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(out, "training_speed.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print("\n" + text + f"\nwritten: {out}/training_speed.csv, training_speed.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
