"""IMDB-shaped data (``text``, ``label``): loading, a disjoint shard per site, a shared held-out split.

A source is a Hugging Face hub name (default ``stanfordnlp/imdb``) or a local path:
  * a folder written by ``DatasetDict.save_to_disk``;
  * a folder holding ``train.<ext>`` and optionally ``test.<ext>`` (parquet, jsonl, json or csv);
  * a single parquet / jsonl / json / csv file.
Without a ``test`` split, a fixed 10 % of ``train`` is held out (same seed everywhere, so all sites agree).
"""

import hashlib
import math
import os
from dataclasses import dataclass

DEFAULT_DATASET = "stanfordnlp/imdb"
TEXT_FIELD = "text"
LABEL_FIELD = "label"
# How the training split is cut into the sites' shards (TrainSettings.partition); the held-out split is shared.
PARTITIONS = {
    "iid": "a seeded permutation cut into near-equal parts: every site sees the same label mix",
    "label-skew": "each label's rows split over the sites in proportions drawn from a seeded Dirichlet(alpha) "
                  "(NIID-Bench's label-distribution skew): small alpha, each site mostly one label; large, near IID",
}
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class DataError(ValueError):
    """The dataset or shard the user asked for cannot be produced."""


def _looks_local(source: str) -> bool:
    return os.path.isabs(source) or source.startswith(("./", "../", "~")) or os.path.exists(source)


def _load_files(files: dict):
    from datasets import load_dataset

    exts = {os.path.splitext(f)[1] for f in files.values()}
    if len(exts) != 1 or next(iter(exts)) not in _BUILDERS:
        raise DataError(f"unsupported data files {sorted(files.values())}: use parquet, jsonl, json or csv")
    return load_dataset(_BUILDERS[exts.pop()], data_files=files)


def load_text_dataset(source: str = DEFAULT_DATASET, seed: int = 42):
    """A DatasetDict with ``train`` and ``test`` splits, each with a ``text`` column."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    if not source:
        raise DataError("no dataset given: pass a Hugging Face name such as 'stanfordnlp/imdb' or a local path")
    if _looks_local(source):
        path = os.path.expanduser(source)
        if os.path.isfile(path):
            ds = _load_files({"train": path})
        elif os.path.isdir(path):
            if os.path.exists(os.path.join(path, "dataset_dict.json")):
                ds = load_from_disk(path)
            else:
                found = {}
                for name in sorted(os.listdir(path)):
                    stem, ext = os.path.splitext(name)
                    if stem in ("train", "test") and ext in _BUILDERS:
                        found[stem] = os.path.join(path, name)
                if "train" not in found:
                    raise DataError(f"dataset folder {source!r} has no train.parquet / train.jsonl / train.csv")
                ds = _load_files(found)
        else:
            raise DataError(f"dataset path {source!r} does not exist")
    else:
        try:
            ds = load_dataset(source)
        except Exception as e:  # datasets raises several unrelated types for "not found / offline"
            raise DataError(f"cannot load dataset {source!r}: {e}") from e

    if not isinstance(ds, DatasetDict) or "train" not in ds:
        raise DataError(f"dataset {source!r} has no 'train' split")
    if TEXT_FIELD not in ds["train"].column_names:
        raise DataError(f"dataset {source!r} has no {TEXT_FIELD!r} column (columns: {ds['train'].column_names})")
    if "test" not in ds:
        held = ds["train"].train_test_split(test_size=0.1, seed=seed)
        ds = DatasetDict(train=held["train"], test=held["test"])
    return DatasetDict(train=ds["train"], test=ds["test"])


def shard_indices(num_rows: int, site_index: int, num_sites: int, seed: int = 42) -> list:
    """Row indices of one site's shard: a seeded permutation cut into ``num_sites`` near-equal, disjoint parts."""
    import numpy as np

    if num_sites < 1:
        raise DataError(f"number of sites must be at least 1, got {num_sites}")
    if not 0 <= site_index < num_sites:
        raise DataError(f"site index {site_index} is out of range for {num_sites} site(s) (0..{num_sites - 1})")
    if num_rows < num_sites:
        raise DataError(f"{num_rows} training rows cannot be split over {num_sites} sites")
    order = np.random.default_rng(seed).permutation(num_rows)
    return np.array_split(order, num_sites)[site_index].tolist()


def label_skew_indices(labels, num_sites: int, alpha: float, seed: int = 42) -> list:
    """Every site's row indices under label skew (NIID-Bench, Li et al. 2021, "distribution-based label imbalance"):
    for each label, proportions p ~ Dirichlet(alpha, ..., alpha) over the sites, and that label's rows (shuffled)
    are cut at those proportions. Shards are disjoint, cover every row, and depend only on (labels, num_sites,
    alpha, seed); each shard is shuffled, so a cap (max_train_samples) keeps a random part of it.

    A draw that leaves a site fewer than a tenth of an even share (at least 1 row) is drawn again from the same
    generator (NVFlare's CIFAR-10 Dirichlet split does the same with a fixed minimum); after 100 draws, DataError.
    """
    import numpy as np

    labels = np.asarray(labels)
    if num_sites < 1:
        raise DataError(f"number of sites must be at least 1, got {num_sites}")
    if not alpha > 0:
        raise DataError(f"the Dirichlet alpha must be positive, got {alpha}")
    if len(labels) < num_sites:
        raise DataError(f"{len(labels)} training rows cannot be split over {num_sites} sites")
    rng = np.random.default_rng(seed)
    min_rows = max(1, math.ceil(0.1 * len(labels) / num_sites))
    for _ in range(100):
        shards = [[] for _ in range(num_sites)]
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_sites, float(alpha))))[:-1] * len(rows)).astype(int)
            for shard, part in zip(shards, np.split(rows, cuts)):
                shard.extend(part.tolist())
        if min(len(s) for s in shards) >= min_rows:
            return [rng.permutation(s).tolist() for s in shards]
    raise DataError(f"label-skew with alpha {alpha} left a site under {min_rows} rows in 100 draws: "
                    "use a larger --dirichlet_alpha or fewer sites")


def partition_indices(labels, site_index: int, num_sites: int, partition: str = "iid", alpha: float = 0.5,
                      seed: int = 42) -> list:
    """Row indices of one site's shard of a training split whose labels are ``labels`` (PARTITIONS)."""
    if partition not in PARTITIONS:
        raise DataError(f"unknown partition {partition!r}: use one of {', '.join(PARTITIONS)}")
    if partition == "iid":
        return shard_indices(len(labels), site_index, num_sites, seed)
    if not 0 <= site_index < num_sites:
        raise DataError(f"site index {site_index} is out of range for {num_sites} site(s) (0..{num_sites - 1})")
    return label_skew_indices(labels, num_sites, alpha, seed)[site_index]


def label_counts(dataset) -> dict:
    """{label: rows} of a split with a label column; {} without one."""
    if LABEL_FIELD not in dataset.column_names:
        return {}
    counts = {}
    for label in dataset[LABEL_FIELD]:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def fingerprint(dataset) -> str:
    """Short hash of a split's texts: lets logs and tests tell shards apart without printing data."""
    h = hashlib.sha256()
    for text in dataset[TEXT_FIELD]:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclass
class SiteData:
    train: object  # datasets.Dataset, column text: this site's shard
    held_out: object  # datasets.Dataset, column text: the held-out split, the same at every site
    label_counts: dict  # {label: rows} of the shard; {} when the data has no label column


def load_site_data(
    source: str,
    site_index: int,
    num_sites: int,
    seed: int = 42,
    max_train_samples: int = 0,
    eval_samples: int = 0,
    partition: str = "iid",
    alpha: float = 0.5,
) -> SiteData:
    """This site's shard of the training split (``partition``, PARTITIONS) and the shared held-out split.

    Raises DataError for a site outside the federation, a dataset without the label column that label-skew needs,
    or a split too small for the sites."""
    ds = load_text_dataset(source, seed=seed)
    train = ds["train"]
    if partition == "label-skew" and LABEL_FIELD not in train.column_names:
        raise DataError(f"dataset {source!r} has no {LABEL_FIELD!r} column: --partition label-skew needs one "
                        "(or use --partition iid)")
    labels = train[LABEL_FIELD] if partition == "label-skew" else [0] * len(train)
    train = train.select(partition_indices(labels, site_index, num_sites, partition, alpha, seed))
    if max_train_samples and max_train_samples < len(train):
        train = train.select(range(max_train_samples))
    test = ds["test"].shuffle(seed=seed)
    if eval_samples and eval_samples < len(test):
        test = test.select(range(eval_samples))
    keep = [TEXT_FIELD]
    return SiteData(train.select_columns(keep), test.select_columns(keep), label_counts(train))


def site_split(source: str, site_index: int, num_sites: int, seed: int = 42, max_train_samples: int = 0,
               eval_samples: int = 0, partition: str = "iid", alpha: float = 0.5):
    """(train shard of this site, held-out evaluation split shared by all sites): load_site_data without the
    label counts."""
    data = load_site_data(source, site_index, num_sites, seed, max_train_samples, eval_samples, partition, alpha)
    return data.train, data.held_out
