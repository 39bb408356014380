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
                             perplexity; then per round a row with site "global": the server's weighted averages.
                             ROUNDS ARE 1-BASED here (round 1 = the first round; NVFlare and round_metrics.jsonl
                             count from 0). global_eval_loss is the held-out loss of the global model each site
                             received at the start of the round, eval_loss / perplexity that of the site's model
                             after its local training. An empty cell = not reported.
  plots/train_loss.png       training loss per site (and the weighted mean) against the round.
  plots/global_perplexity.png
                             held-out perplexity of the global model, exp(global_eval_loss), against the number of
                             rounds completed: 0 = the initial model (evaluated at the start of round 1), k = the
                             global model after k rounds. The global model after the last round is never evaluated
                             by the job, so the last point (hollow marker) is exp(the server-aggregated eval_loss of
                             the last round): the weighted mean over the sites' trained models, on the same
                             held-out split.
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
import csv
import json
import math
import os
import re
import shutil
import stat
import sys

CHECKPOINT = os.path.join("app_server", "FL_global_model.pt")
SERVER_CONFIG = os.path.join("app_server", "config", "config_fed_server.json")
ROUND_METRICS = os.path.join("metrics", "round_metrics.jsonl")
METRICS = ("train_loss", "eval_loss", "global_eval_loss", "perplexity")
CSV_COLUMNS = ("round", "site") + METRICS
GLOBAL = "global"  # the site name of the server-aggregated rows
MODEL_DIR = "global_model"
ADAPTER_DIR = "global_adapter"
TRAIN_LOSS_PNG = os.path.join("plots", "train_loss.png")
PERPLEXITY_PNG = os.path.join("plots", "global_perplexity.png")
SYSTEM_PNG = os.path.join("plots", "round_time_and_bytes.png")
SYSTEM_CSV = "system_metrics.csv"
EARLIER_ROUNDS = "earlier_rounds.jsonl"  # fl_deploy/lineage.py
TB_EVENTS = "tb_events"
SYSTEM_PREFIX = "system/"
MAX_LOSS = 50.0  # as app_code/training.py's evaluate(): exp() of a diverged loss stays finite


class ExportError(Exception):
    """Bad input; the message is one sentence for the user."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def perplexity(loss):
    return None if loss is None else math.exp(min(loss, MAX_LOSS))


# --- inputs ------------------------------------------------------------------------------------------------------

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


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metric_dict(items, where: str) -> dict:
    if not isinstance(items, list):
        raise ExportError(f"{where}: metrics must be a list of {{name, value}}")
    out = {}
    for m in items:
        if not isinstance(m, dict) or "name" not in m:
            raise ExportError(f"{where}: metrics must be a list of {{name, value}}")
        out[m["name"]] = _number(m.get("value"))
    return out


def read_round_metrics(path: str) -> list:
    """round_metrics.jsonl as [{"round": 0-based int, "global": {metric: value}, "sites": {site: {metric: value}}}],
    sorted by round (a round written twice keeps its last line)."""
    rounds = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ExportError(f"{where} is not JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("round"), int) or rec["round"] < 0:
                raise ExportError(f"{where} has no round number (a JSON object with an integer 'round' >= 0)")
            sites = {}
            for s in rec.get("sites") or []:
                if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                    raise ExportError(f"{where}: each entry of 'sites' needs a 'name'")
                sites[s["name"]] = _metric_dict(s.get("metrics") or [], where)
            rounds[rec["round"]] = {
                "round": rec["round"],
                "global": _metric_dict(rec.get("aggregated_metrics") or [], where),
                "sites": sites,
            }
    return [rounds[r] for r in sorted(rounds)]


def read_run_metrics(result_dir: str, ws: str):
    """The job's round records with the earlier rounds of a resumed run before them (a round the job ran itself
    wins); None when the job wrote no round_metrics.jsonl."""
    own_path = os.path.join(ws, ROUND_METRICS)
    if not os.path.isfile(own_path):
        return None
    earlier_path = os.path.join(result_dir, EARLIER_ROUNDS)
    rounds = {r["round"]: r for r in read_round_metrics(earlier_path)} if os.path.isfile(earlier_path) else {}
    rounds.update({r["round"]: r for r in read_round_metrics(own_path)})
    return [rounds[r] for r in sorted(rounds)]


def read_system_metrics(ws: str) -> dict:
    """{run: {metric: {round (0-based): value}}} of the system/* scalars under workspace/tb_events/<run>/ (every
    event file of a run, earlier jobs' copies included; a later file's value for a round wins)."""
    folder = os.path.join(ws, TB_EVENTS)
    if not os.path.isdir(folder):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for run in sorted(os.listdir(folder), key=_natural_key):
        path = os.path.join(folder, run)
        if not os.path.isdir(path):
            continue
        files = sorted((f for f in os.listdir(path) if ".tfevents." in f),
                       key=lambda f: (not f.startswith("earlier-"), f))  # earlier jobs first, the job's own last
        for name in files:
            acc = EventAccumulator(os.path.join(path, name), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags().get("scalars", []):
                if tag.startswith(SYSTEM_PREFIX):
                    series = out.setdefault(run, {}).setdefault(tag[len(SYSTEM_PREFIX):], {})
                    series.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def write_system_csv(system: dict, path: str):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "run", "metric", "value"])
        for run, metrics in system.items():
            for metric, series in sorted(metrics.items()):
                for step in sorted(series):
                    w.writerow([step + 1, run, metric, series[step]])


def metric_rows(rounds: list) -> list:
    """CSV rows: per round the sites (natural order: site-2 before site-10), then the "global" row. 1-based rounds."""
    rows = []
    for rec in rounds:
        named = [(site, rec["sites"][site]) for site in sorted(rec["sites"], key=_natural_key)]
        for site, values in named + [(GLOBAL, rec["global"])]:
            rows.append({"round": rec["round"] + 1, "site": site, **{m: values.get(m) for m in METRICS}})
    return rows


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


# --- outputs -----------------------------------------------------------------------------------------------------

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


def write_csv(rows: list, path: str):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})


def _series(rows: list, site: str, metric: str):
    pts = [(r["round"], r[metric]) for r in rows if r["site"] == site and r[metric] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def global_perplexity_points(rows: list):
    """([(rounds completed, perplexity of the global model)], (last round, final aggregated perplexity) or None)."""
    rounds = sorted({r["round"] for r in rows})
    points = []
    for rnd in rounds:
        loss = next((r["global_eval_loss"] for r in rows if r["round"] == rnd and r["site"] == GLOBAL), None)
        if loss is None:  # no server aggregate: every site evaluated the same global model on the same split
            site_losses = [r["global_eval_loss"] for r in rows
                           if r["round"] == rnd and r["site"] != GLOBAL and r["global_eval_loss"] is not None]
            loss = sum(site_losses) / len(site_losses) if site_losses else None
        if loss is not None:
            points.append((rnd - 1, perplexity(loss)))
    final = None
    if rounds:
        last = next((r["eval_loss"] for r in rows if r["round"] == rounds[-1] and r["site"] == GLOBAL), None)
        if last is not None:
            final = (rounds[-1], perplexity(last))
    return points, final


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.set_title(title, fontsize=11)
    ax.margins(x=0.05, y=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def _finish(plt, fig, ax, path: str, has_data: bool, what: str):
    if has_data:
        ax.legend()
    else:
        ax.text(0.5, 0.5, f"no {what} in round_metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_train_loss(rows: list, path: str, title: str):
    plt, fig, ax = _figure(f"Training loss per site\njob {title}", "round", "training loss")
    sites = [s for s in dict.fromkeys(r["site"] for r in rows) if s != GLOBAL]
    has_data = False
    for site in sites:
        x, y = _series(rows, site, "train_loss")
        if x:
            ax.plot(x, y, marker="o", label=site)
            has_data = True
    x, y = _series(rows, GLOBAL, "train_loss")
    if x:
        ax.plot(x, y, color="black", linestyle="--", marker=".", label="all sites (weighted mean)")
        has_data = True
    _finish(plt, fig, ax, path, has_data, "train_loss")


def plot_global_perplexity(rows: list, path: str, title: str):
    plt, fig, ax = _figure(f"Global model held-out perplexity\njob {title}",
                           "rounds of federated training completed (0 = initial model)", "perplexity")
    points, final = global_perplexity_points(rows)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="tab:blue",
                label="global model, evaluated at the start of the next round")
        for x, y in points:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if final:
        if points and points[-1][0] < final[0]:
            ax.plot([points[-1][0], final[0]], [points[-1][1], final[1]], linestyle=":", color="tab:blue")
        ax.plot([final[0]], [final[1]], marker="o", markerfacecolor="white", color="tab:blue", linestyle="none",
                label=f"after round {final[0]}: sites' trained models (aggregated eval)")
        ax.annotate(f"{final[1]:.1f}", final, textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    _finish(plt, fig, ax, path, bool(points or final), "global_eval_loss")


def plot_round_time_and_bytes(system: dict, path: str, title: str):
    """Top: the server's round duration and each site's round time; bottom: MB each site received and sent."""
    plt, fig, ax = _figure(f"Round time and bytes per site\njob {title}", "round", "seconds")
    fig.set_size_inches(7, 7)
    ax.set_position([0.12, 0.56, 0.84, 0.34])
    bytes_ax = fig.add_axes([0.12, 0.08, 0.84, 0.34], sharex=ax)
    bytes_ax.set_xlabel("round")
    bytes_ax.set_ylabel("MB (tensor bytes)")
    bytes_ax.grid(True, alpha=0.3)
    has_time = has_bytes = False
    for run, metrics in system.items():
        if "round_duration_s" in metrics:
            x = sorted(metrics["round_duration_s"])
            ax.plot([r + 1 for r in x], [metrics["round_duration_s"][r] for r in x], color="black", linestyle="--",
                    marker=".", label="server: round duration")
            has_time = True
    for run, metrics in system.items():
        if "round_time_s" in metrics:
            x = sorted(metrics["round_time_s"])
            line, = ax.plot([r + 1 for r in x], [metrics["round_time_s"][r] for r in x], marker="o",
                            label=f"{run}: receive -> result")
            has_time = True
            for key, style, what in (("received_bytes", "-", "received"), ("sent_bytes", ":", "sent")):
                series = metrics.get(key) or {}
                if series:
                    xs = sorted(series)
                    bytes_ax.plot([r + 1 for r in xs], [series[r] / 1e6 for r in xs], linestyle=style, marker="o",
                                  color=line.get_color(), markerfacecolor="white" if what == "sent" else None,
                                  label=f"{run} {what}")
                    has_bytes = True
    if has_bytes:
        bytes_ax.legend(fontsize=8)
        bytes_ax.set_ylim(bottom=0)
    else:
        bytes_ax.text(0.5, 0.5, "no system/*_bytes in tb_events", ha="center", va="center",
                      transform=bytes_ax.transAxes)
    if has_time:
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no system/round time in tb_events", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------------------------

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
