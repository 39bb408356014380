#!/usr/bin/env python3
"""Refit the preflight's slopes (fl_deploy/submit_job/sizing_slopes.json) from a container run of the exchange
benchmark, so that submit_job.py predicts from the deployment as it is, not as it was:

    .venv/bin/python benchmarks/exchange.py --deployment compose --base-image fl-local-base:bookworm \\
        --model gpt2-124m --sites 2,8 --rounds 11 --configs plain-offload --project "" --out results/x
    cp results/x/benchmark.csv docs/data/<name>-<date>.csv            # the fit cites a committed CSV
    .venv/bin/python benchmarks/fit_sizing.py docs/data/<name>-<date>.csv --commit <measured at> --write

Without --write it prints the new slopes beside the old and each row's prediction against its measure. The model
and the least squares: fl_deploy/submit_job/sizing.py (fit). The base memory is kept (measured with the tiny model;
the run gives one model size). The round's intercept is what the preflight is judged by on a tiny job; set it from
tiny training jobs' results (each results/<job_id>/sizing.json that submit_job.py wrote) first, then refit the
slopes through it:

    .venv/bin/python benchmarks/fit_sizing.py --tiny_jobs results/*/sizing.json --commit <their commit> --write
"""

import argparse
import csv
import json
import os
import sys
import time

from fl_deploy import ROOT
from fl_deploy.submit_job import sizing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="?", help="benchmarks/exchange.py's benchmark.csv of a --deployment compose run, "
                                          "committed under docs/data/")
    p.add_argument("--tiny_jobs", nargs="+", metavar="SIZING_JSON",
                   help="results/<job_id>/sizing.json of tiny training jobs on the compose stack (after the CSV, "
                        "if any): the round's intercept becomes the geometric mean of their measured exchange "
                        "(sizing.intercept); jobs that move more than TINY_MB a round are left out")
    p.add_argument("--config", default="plain-offload", help="the configuration to fit (default: the deployment's, "
                                                             "plain-offload)")
    p.add_argument("--commit", required=True, help="the commit the run measured (its benchmark's checkout)")
    p.add_argument("--write", action="store_true", help=f"write {os.path.relpath(sizing.SLOPES, ROOT)}")
    args = p.parse_args(argv)
    if not args.csv and not args.tiny_jobs:
        p.error("give a benchmark CSV to refit the slopes, --tiny_jobs to set the round's intercept, or both")
    previous = sizing.load_slopes()
    if args.tiny_jobs:
        jobs = _tiny_jobs(p, args.tiny_jobs)
        c = sizing.intercept(list(jobs.values()))
        print(f"round intercept before {previous['round']['intercept_s']} s, after {c} s: the geometric mean of "
              f"{len(jobs)} jobs' measured exchange, {', '.join(f'{v:g}' for v in sorted(jobs.values()))} s")
        previous["round"]["intercept_s"] = c
        if args.write:
            previous["source"]["runs"] = [r for r in previous["source"]["runs"] if "jobs" not in r] + [{
                "jobs": sorted(os.path.basename(os.path.dirname(os.path.abspath(j))) for j in jobs),
                "commit": args.commit,
                "what": f"the measured exchange (sizing.measured_exchange_s) of {len(jobs)} tiny training jobs on "
                        f"the compose stack, {time.strftime('%Y-%m-%d')}: "
                        f"{', '.join(f'{v:g}' for v in sorted(jobs.values()))} s; the round's intercept is their "
                        f"geometric mean, {c} s (benchmarks/fit_sizing.py --tiny_jobs)"}]
    if not args.csv:
        if args.write:
            _write(previous["source"], previous)
            print("the slopes were fitted through the old intercept: refit them through this one with "
                  "benchmarks/fit_sizing.py <the benchmark CSV> --commit <its commit> --write")
        return 0
    if not os.path.isfile(args.csv):
        p.error(f"{args.csv} is not a file: give the benchmark.csv of an exchange benchmark run")
    with open(args.csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("config") == args.config
                and r.get("status") == "FINISHED:COMPLETED"]
    try:
        slopes = sizing.fit(rows, previous)
    except ValueError as e:
        p.error(f"{args.csv}, --config {args.config}: {e}")
    for part in ("round", "server", "site"):
        print(f"{part:<7} before {json.dumps(previous[part])}\n        after  {json.dumps(slopes[part])}")
    for r in rows:
        model, exchange, n = float(r["model_MB"]) * 1e6, int(r["bytes_up_per_site"]), int(r["sites"])
        pred = sizing.predict(int(model), exchange, n, slopes)
        print(f"{r['model']} {n} sites: round {pred.round_exchange_s:.1f} s predicted, {r['round_s_median']} "
              f"measured; server {pred.server_peak_bytes / sizing.GIB:.2f} GiB, {r['server_peak_GiB']}; site "
              f"{pred.site_peak_bytes / sizing.GIB:.2f} GiB, {r['site_peak_GiB_max']}")
    if args.write:
        source = previous["source"]
        what = (f"{rows[0]['model']} exchange-only in the containers ({args.config}) at "
                f"{', '.join(sorted({r['sites'] for r in rows}, key=int))} sites: round slope, server peak per site "
                "and per model byte, site peak per model byte (benchmarks/fit_sizing.py)")
        csv_path = os.path.relpath(os.path.abspath(args.csv), ROOT)  # a refit from the same CSV replaces its entry
        source["runs"] = [r for r in source["runs"] if r.get("csv") != csv_path] + [
            {"csv": csv_path, "commit": args.commit, "what": what}]
        source["fitted"] = (f"{time.strftime('%Y-%m-%d')}, benchmarks/fit_sizing.py {os.path.basename(args.csv)} "
                            f"--config {args.config}: round slope and the server's and sites' per-byte slopes from "
                            "that run, through the intercept of the tiny training jobs (--tiny_jobs); base bytes "
                            "from the tiny model's runs")
        source["fit"] = ("fl_deploy/submit_job/sizing.py fit: round least squares through the kept intercept "
                         "(x = sites x exchange GB); server the least-squares line of its peak over sites; site the "
                         "median peak per model byte")
        _write(source, slopes)
    return 0


TINY_MB = 10  # MB a round moves (sites x exchange bytes): above it the wire's slope, not the intercept, is measured


def _tiny_jobs(p, paths: list) -> dict:
    """{sizing.json path: measured exchange s} of the tiny jobs among `paths` that have a measure (a job of one
    round, or one where a site missed a round, has none; a job that moves more than TINY_MB a round is not tiny)."""
    jobs = {}
    for path in paths:
        if path.endswith(".csv"):
            p.error(f"{path} is a CSV: give the benchmark CSV before --tiny_jobs, whose arguments are sizing.json files")
        try:
            with open(path) as f:
                saved = json.load(f)
            measured, predicted = saved["measured"]["round_exchange_s"], saved["predicted"]
            moved_mb = predicted["sites"] * predicted["exchange_bytes"] / 1e6
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"{path}: not a sizing.json that submit_job.py wrote ({e!r}); give results/<job_id>/sizing.json")
        if measured is None:
            print(f"{path}: no measured exchange (one round, or a site missed a round): left out")
        elif moved_mb > TINY_MB:
            print(f"{path}: not a tiny job ({moved_mb:.0f} MB a round, over {TINY_MB}): left out")
        elif measured <= 0:
            print(f"{path}: measured {measured} s (the geometric mean needs > 0): left out")
        else:
            jobs[path] = measured
    if not jobs:
        p.error("none of the --tiny_jobs files is a tiny job with a measured exchange: run a tiny job of two or "
                "more rounds (scripts/demo.sh)")
    return jobs


def _write(source: dict, slopes: dict):
    with open(sizing.SLOPES, "w") as f:
        json.dump({"source": source, **{k: slopes[k] for k in ("round", "server", "site")}}, f, indent=2)
        f.write("\n")
    print(f"written: {sizing.SLOPES}")


if __name__ == "__main__":
    sys.exit(main())
