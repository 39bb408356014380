"""A job's metrics as people read them: workspace/metrics/round_metrics.jsonl (with a resumed run's earlier rounds)
-> metrics.csv, one row per (round, site) plus the server's "global" row, rounds 1-based; the system/* scalars of
its TensorBoard events -> system_metrics.csv. The column meanings: fl_deploy/export_results/__init__.py."""

import csv
import json
import math
import os
import re

ROUND_METRICS = os.path.join("metrics", "round_metrics.jsonl")
# held_out_rows: the rows a site's held-out losses were measured on; in the "global" row their sum, the weights of
# its global_eval_loss / eval_loss (app_code/fl_common/held_out.py).
METRICS = ("train_loss", "eval_loss", "global_eval_loss", "perplexity", "held_out_rows")
CSV_COLUMNS = ("round", "site") + METRICS
GLOBAL = "global"  # the site name of the server-aggregated rows
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


def write_csv(rows: list, path: str):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
