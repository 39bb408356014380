#!/usr/bin/env python3
"""Refit the preflight's slopes (fl_deploy/submit_job/sizing_slopes.json) from a container run of the exchange
benchmark, so that submit_job.py predicts from the deployment as it is, not as it was:

    .venv/bin/python benchmarks/exchange.py --deployment compose --base-image fl-local-base:bookworm \\
        --model gpt2-124m --sites 2,8 --rounds 11 --configs plain-offload --project "" --out results/x
    cp results/x/benchmark.csv docs/data/<name>-<date>.csv            # the fit cites a committed CSV
    .venv/bin/python benchmarks/fit_sizing.py docs/data/<name>-<date>.csv --commit <measured at> --write

Without --write it prints the new slopes beside the old and each row's prediction against its measure. The model
and the least squares: fl_deploy/submit_job/sizing.py (fit). The round's intercept and the base memory are kept
(measured with the tiny model; the run gives one model size).
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
    p.add_argument("csv", help="benchmarks/exchange.py's benchmark.csv of a --deployment compose run, committed "
                               "under docs/data/")
    p.add_argument("--config", default="plain-offload", help="the configuration to fit (default: the deployment's, "
                                                             "plain-offload)")
    p.add_argument("--commit", required=True, help="the commit the run measured (its benchmark's checkout)")
    p.add_argument("--write", action="store_true", help=f"write {os.path.relpath(sizing.SLOPES, ROOT)}")
    args = p.parse_args(argv)
    if not os.path.isfile(args.csv):
        p.error(f"{args.csv} is not a file: give the benchmark.csv of an exchange benchmark run")
    with open(args.csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("config") == args.config
                and r.get("status") == "FINISHED:COMPLETED"]
    previous = sizing.load_slopes()
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
        source["runs"] = [r for r in source["runs"] if r["csv"] != csv_path] + [
            {"csv": csv_path, "commit": args.commit, "what": what}]
        source["fitted"] = (f"{time.strftime('%Y-%m-%d')}, benchmarks/fit_sizing.py {os.path.basename(args.csv)} "
                            f"--config {args.config}: round slope and the server's and sites' per-byte slopes from "
                            "that run; the intercept and base bytes kept from the tiny model's runs")
        source["fit"] = ("fl_deploy/submit_job/sizing.py fit: round least squares through the kept intercept "
                         "(x = sites x exchange GB); server the least-squares line of its peak over sites; site the "
                         "median peak per model byte")
        with open(sizing.SLOPES, "w") as f:
            json.dump({"source": source, **slopes}, f, indent=2)
            f.write("\n")
        print(f"written: {sizing.SLOPES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
