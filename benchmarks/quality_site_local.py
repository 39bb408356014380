"""The site-local arm of benchmarks/quality.py (--partitions site-local): each site its own generated domain.

Each site k gets its own folder made by fl_deploy/make_tiny_assets.py --site-data: train_rows / N training and
eval_samples / N held-out rows, a label mix of its own (site_label_mix: 80 % positive reviews at site-1 down to 20 %
at site-N) and a film catalogue of its own (--films with seed SITE_SEED_STEP x (k + 1): other titles, years and
directors), so what one site learns of its films says little about the other's.

  FL site-local <optimizer>/<schedule>
              client.py in NVFlare's simulator with --data_source site: each site reads all rows of its own folder
              and evaluates the global model on its own held-out rows (fl_site/site_data.py). The simulator runs
              every site with one environment, so FL_SITE_DATA_DIR is <work>/sites/{site}: each site resolves
              "{site}" to its own name and reads only its folder. Its held-out loss after round r is the sites'
              losses weighted by their held-out rows, as the server reports it (fl_common/held_out.py).
  centralized the union of the sites' training rows, accumulation N times a site's (as quality.py's).
  site-K alone
              site K's own folder only, R x S steps of B rows.

Every arm is evaluated on every site's held-out rows after each block of S steps; the table gives the held-out
loss weighted by held-out rows and each site's own, so a site alone shows where it is weak: the other site's domain.
"""

import os
import re

from benchmarks import quality

SITE_SEED_STEP = 10  # site k's data seed 10 (k + 1): make_tiny_assets draws its films with seed + 1
WEIGHTED = "weighted"  # the held_out column of a row whose loss is weighted over the sites' held-out rows


def site_label_mix(k: int, n: int) -> float:
    """Share of positive reviews at site k (0-based) of n >= 2: 0.8 at the first site down to 0.2 at the last."""
    return round(0.8 - 0.6 * k / (n - 1), 4)


def site_names(n: int) -> list:
    return [f"site-{k + 1}" for k in range(n)]


def make_site_folders(root: str, n: int, train_rows: int, held_out_rows: int, films: int) -> dict:
    """{site: folder} of n sites' own data under root/<site> (make_tiny_assets --site-data)."""
    import contextlib

    from fl_deploy import make_tiny_assets

    folders = {}
    for k, site in enumerate(site_names(n)):
        folders[site] = os.path.join(root, site)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            make_tiny_assets.main(["--site-data", folders[site], "--train", str(train_rows // n),
                                   "--test", str(max(1, held_out_rows // n)), "--films", str(films),
                                   "--seed", str(SITE_SEED_STEP * (k + 1)),
                                   "--label-mix", str(site_label_mix(k, n))])
    return folders


def load_sites(folders: dict, settings) -> dict:
    """{site: SiteData} read as each site reads its own folder (fl_site.site_data.load_own_data)."""
    from fl_site.site_data import DIR_ENV, load_own_data

    return {site: load_own_data(site, settings.seed, eval_samples=settings.eval_samples, environ={DIR_ENV: folder})
            for site, folder in folders.items()}


def weighted(losses: dict, rows: dict) -> float:
    """sum(rows_s x loss_s) / sum(rows_s) over the sites: the server's figure (fl_common.held_out)."""
    from fl_common.held_out import HELD_OUT_ROWS, weighted_held_out

    return weighted_held_out([{"global_eval_loss": losses[s], HELD_OUT_ROWS: rows[s]}
                              for s in losses])["global_eval_loss"]


def per_site(trainer, sites: list) -> dict:
    """{site: held-out loss} of the trainer's model on each site's held-out rows (its eval_dataset dict)."""
    return {s: float(trainer.evaluate(eval_dataset=s)["eval_loss"]) for s in sites}


def curve_rows(arm: str, semantics: str, curve: list, rows: dict, args, rows_per_step: int) -> list:
    """quality.curve_rows for each site's held-out loss and for their weighted mean (held_out column)."""
    out = []
    for name in [WEIGHTED, *rows]:
        losses = [weighted(point, rows) if name == WEIGHTED else point[name] for point in curve]
        out += [{**r, "held_out": name} for r in quality.curve_rows(arm, "site-local", semantics, losses, args,
                                                                    rows_per_step)]
    return out


def train_sites(flags: list, data: dict, train_on: list, rounds: int, log_path: str) -> list:
    """[{site: held-out loss}] after 0, S, 2S, ... steps of one model trained on the union of train_on's rows."""
    from datasets import concatenate_datasets

    from fl_site.training import parse_settings

    settings = parse_settings(flags)
    train = concatenate_datasets([data[s].train for s in train_on])
    return quality.train_curve(settings, train, {s: d.held_out for s, d in data.items()}, rounds, log_path,
                               measure=lambda trainer: per_site(trainer, list(data)))


def evaluate_checkpoint(flags: list, checkpoint: str, data: dict, scratch: str) -> dict:
    """{site: held-out loss} of a persisted global model on each site's held-out rows."""
    import contextlib

    from fl_site.training import build_trainer, parse_settings

    settings = parse_settings(flags)
    model, tokenizer = quality.checkpoint_model(settings, checkpoint)
    first = next(iter(data.values()))
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        trainer = build_trainer(model, tokenizer, first.train, {s: d.held_out for s, d in data.items()}, settings,
                                scratch)
        return per_site(trainer, list(data))


def run(args, work: str, out: str, wall: dict) -> dict:
    """Every arm of the site-local partition: {"rows": CSV rows, "finals": {arm: (semantics, {site: final loss})},
    "held_out_rows": {site: n}, "notes": [...]}."""
    import time

    from fl_site.training import parse_settings

    n, per_site_rows = args.sites, args.batch_size * args.grad_accum
    folders = make_site_folders(os.path.join(work, "sites"), n, args.train_rows, args.eval_samples,
                                quality.TINY_FILMS)
    flags = quality.train_flags(args, "iid") + ["--data_source", "site"]
    data = load_sites(folders, parse_settings(flags))
    held = {s: len(d.held_out) for s, d in data.items()}
    rows, finals = [], {}

    def record(arm, semantics, curve, rows_per_step, t):
        nonlocal rows
        wall[f"{arm} (site-local)"] = time.perf_counter() - t
        rows += curve_rows(arm, semantics, curve, held, args, rows_per_step)
        finals[arm] = (semantics, curve[-1])
        print(f"{arm} (site-local): final held-out loss {weighted(curve[-1], held):.4f} weighted, "
              + ", ".join(f"{s} {v:.4f}" for s, v in curve[-1].items()) + f" ({time.perf_counter() - t:.0f} s)",
              flush=True)

    t = time.perf_counter()
    central_flags = quality.train_flags(args, "iid", grad_accum=args.grad_accum * n) + ["--data_source", "site"]
    curve = train_sites(central_flags, data, list(data), args.rounds, os.path.join(out, "centralized-site-local.log"))
    record("centralized", "one run", curve, n * per_site_rows, t)
    for site in data:
        t = time.perf_counter()
        record(f"{site} alone", "one run", train_sites(flags, data, [site], args.rounds,
                                                        os.path.join(out, f"alone-site-local-{site}.log")),
               per_site_rows, t)
    for semantics in args.semantics_list:
        t = time.perf_counter()
        fl_flags = quality.train_flags(args, "iid", semantics) + ["--data_source", "site"]
        fl = quality.run_fl(args, "site-local", semantics, work, out, flags=fl_flags,
                            env={"FL_SITE_DATA_DIR": os.path.join(work, "sites", "{site}")},
                            final=lambda path: evaluate_checkpoint(fl_flags, path, data, os.path.join(work, "scratch")))
        check_sites(fl["log"], data)
        curve = [{s: fl["rounds"][s][r][1] for s in data} for r in range(args.rounds)] + [fl["losses"][-1]]
        record(f"FL site-local {semantics}", semantics, curve, n * per_site_rows, t)
    notes = ["each site's own data: " + "; ".join(
        f"{s} {len(d.train)} train rows, {held[s]} held-out rows, labels {d.label_counts}, films seed "
        f"{SITE_SEED_STEP * (k + 1) + 1}" for k, (s, d) in enumerate(data.items()))]
    notes.append("every arm is evaluated on every site's held-out rows; the weighted loss is sum(rows x loss) / "
                 "sum(rows), as the server reports it; centralized trains the union of the sites' own rows")
    return {"rows": rows, "finals": finals, "held_out_rows": held, "notes": notes}


_OWN = re.compile(r"(site-\d+): own data, (\d+) train rows \(fingerprint (\w+)\), (\d+) held-out rows "
                  r"\(fingerprint (\w+)\)")


def check_sites(log: str, data: dict):
    """Each FL site trained on all its own rows and evaluated on its own held-out rows: the counts and fingerprints
    its log gives (fl_site/site_data.py's site_rows) are those of its folder. Raises BenchmarkError otherwise."""
    from fl_site.data import fingerprint

    logged = {m.group(1): (int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)) for m in _OWN.finditer(log)}
    for site, d in data.items():
        want = (len(d.train), fingerprint(d.train), len(d.held_out), fingerprint(d.held_out))
        if logged.get(site) != want:
            raise quality.BenchmarkError(f"FL site-local: {site} logged (train rows, fingerprint, held-out rows, "
                                         f"fingerprint) {logged.get(site)}, its own folder holds {want}")


def table(finals: dict, held: dict) -> list:
    """One line per arm: the final held-out loss weighted by held-out rows, each site's own, FL ÷ centralized and
    FL ÷ the best site alone (both on the weighted loss)."""
    central = weighted(finals["centralized"][1], held)
    alone = [weighted(f[1], held) for arm, f in finals.items() if arm.endswith("alone")]
    lines = []
    for arm, (semantics, losses) in finals.items():
        loss = weighted(losses, held)
        line = {"arm": arm, "partition": "site-local", "semantics": semantics, "held_out_loss": round(loss, 5),
                "sites": {s: round(v, 5) for s, v in losses.items()}, "ratio_centralized": round(loss / central, 4)}
        if arm.startswith("FL"):
            line["ratio_best_alone"] = round(loss / min(alone), 4)
            line["below_every_alone"] = loss < min(alone)
        lines.append(line)
    return lines


def markdown(lines: list, held: dict) -> str:
    sites = list(held)
    head = ["arm", "optimizer / schedule", "held-out loss, weighted by held-out rows",
            *[f"{s} held-out ({held[s]} rows)" for s in sites], "÷ centralized", "÷ best site alone"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in lines:
        fl = t["arm"].startswith("FL")
        alone = f"{t['ratio_best_alone']:.3f} {'✓' if t['below_every_alone'] else '✗'}" if fl else ""
        ratio = f"**{t['ratio_centralized']:.3f}**" if fl else f"{t['ratio_centralized']:.3f}"
        out.append(f"| {t['arm']} | {t['semantics']} | {t['held_out_loss']:.4f} | "
                   + " | ".join(f"{t['sites'][s]:.4f}" for s in sites) + f" | {ratio} | {alone} |")
    return "\n".join(out) + "\n"
