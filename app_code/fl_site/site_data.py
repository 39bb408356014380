"""Where a site's rows come from (TrainSettings.data_source, DATA_SOURCES): its shard of the job's shared dataset, or
the site's own data, which its operator declares on the site's host and the job never names.

Site-local data: the site's host sets a folder in its .env (one-host stack: FL_SITE_DATA_<SITE>, e.g.
FL_SITE_DATA_SITE_1; a site bundle: FL_SITE_DATA), Compose mounts it read-only at /data/site in that site's
container only (fl_deploy/compose_files.py, docker/site-host.yaml), where FL_SITE_DATA_DIR is unset and its
default, /data/site, applies. A site run as a process reads FL_SITE_DATA_DIR from its environment; a "{site}" in it
becomes the site's name, for sites that share one environment (NVFlare's simulator: benchmarks/quality.py). Any
format fl_site/data.py's load_text_dataset reads works: a save_to_disk folder, train.<ext> (+ test.<ext>), one file.
No sharding: the site trains on all its rows and evaluates on its own held-out split (its test split, else a seeded
10 % of its rows). What leaves the site: row counts and fingerprints in its log, never the host path or the rows.
"""

import os

from fl_site.data import TEXT_FIELD, DataError, SiteData, fingerprint, label_counts, load_site_data, load_text_dataset

DATA_SOURCES = {
    "shared": "this site's shard of --dataset, the same dataset at every site, cut by the site's position in "
              "--sites (--partition); the held-out split is the same at every site",
    "site": "the site's own data from the folder its host mounts (FL_SITE_DATA_<SITE> in the one-host .env, "
            "FL_SITE_DATA in a site bundle's .env): all its rows, its own held-out split; --dataset and "
            "--partition are not used",
}
DIR_ENV = "FL_SITE_DATA_DIR"  # the folder as the site sees it (in its container: the mount point)
DEFAULT_DIR = "/data/site"
VAR_ENV = "FL_SITE_DATA_VAR"  # the host's .env variable naming that folder, for the fix in an error


def data_dir(environ=None, site: str = "") -> str:
    """The site's data folder as the site sees it: $FL_SITE_DATA_DIR with "{site}" replaced by ``site``, else
    /data/site."""
    return ((os.environ if environ is None else environ).get(DIR_ENV) or DEFAULT_DIR).replace("{site}", site)


def _fix(site: str, environ) -> str:
    var = environ.get(VAR_ENV) or "FL_SITE_DATA"
    return (f"put train.parquet, train.jsonl, train.json or train.csv with a {TEXT_FIELD!r} column (test.* "
            f"optional) or a save_to_disk folder in a folder on {site}'s host, set {var} in that host's .env to it "
            f"and restart the site (docker compose up -d)")


def _clause(error) -> str:
    """The first sentence of an error, on one line, without its full stop: it goes inside our one sentence."""
    return " ".join(str(error).split()).split(". ")[0].rstrip(".")[:200]


def _visible(path: str) -> list:
    return [n for n in os.listdir(path) if not n.startswith(".") and n.lower() != "readme.md"]


def load_own_data(site: str, seed: int = 42, max_train_samples: int = 0, eval_samples: int = 0,
                  environ=None) -> SiteData:
    """All of the site's own rows (capped at max_train_samples) and its own held-out rows (capped at eval_samples,
    a seeded sample) from data_dir().

    Raises DataError, one sentence naming the site, the path as the site sees it and the fix, when the folder is
    missing, empty, unreadable, not a dataset or has no ``text`` column."""
    environ = os.environ if environ is None else environ
    path = data_dir(environ, site)

    def fail(problem: str):
        return DataError(f"{site}: its own data (--data_source site) at {path} {problem}: {_fix(site, environ)}")

    if not os.path.exists(path):
        raise fail("does not exist")
    if not os.access(path, os.R_OK) or (os.path.isdir(path) and not os.access(path, os.X_OK)):
        raise fail(f"is not readable by uid {os.getuid()}")
    if os.path.isdir(path) and not _visible(path):
        raise fail("is empty")
    try:
        ds = load_text_dataset(path, seed=seed)
    except DataError as e:
        raise fail(f"cannot be read ({_clause(e)})") from e
    except Exception as e:  # pyarrow, json and csv readers raise their own types for a damaged or foreign file
        raise fail(f"cannot be read ({type(e).__name__}: {_clause(e)})") from e
    train, test = ds["train"], ds["test"].shuffle(seed=seed)
    if len(train) == 0 or len(test) == 0:
        raise fail(f"has {len(train)} training and {len(test)} held-out rows")
    if max_train_samples and max_train_samples < len(train):
        train = train.select(range(max_train_samples))
    if eval_samples and eval_samples < len(test):
        test = test.select(range(eval_samples))
    return SiteData(train.select_columns([TEXT_FIELD]), test.select_columns([TEXT_FIELD]), label_counts(train))


def site_rows(settings, site: str) -> tuple:
    """(SiteData, one log line) of this site for these TrainSettings (data_source, DATA_SOURCES). The line gives
    row counts, label counts and fingerprints (fl_site/data.py), never a path or a row."""
    if settings.data_source == "site":
        data = load_own_data(site, settings.seed, settings.max_train_samples, settings.eval_samples)
        where = "own data"
    else:
        site_index, num_sites = settings.shard_of(site)
        data = load_site_data(settings.dataset, site_index, num_sites, seed=settings.seed,
                              max_train_samples=settings.max_train_samples, eval_samples=settings.eval_samples,
                              partition=settings.partition, alpha=settings.dirichlet_alpha)
        where = f"shard {site_index}/{num_sites}"
    line = (f"{site}: {where}, {len(data.train)} train rows (fingerprint {fingerprint(data.train)}), "
            f"{len(data.held_out)} held-out rows (fingerprint {fingerprint(data.held_out)}); data_source "
            f"{settings.data_source}, partition {settings.partition}, labels {data.label_counts}")
    return data, line
