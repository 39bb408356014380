"""IMDB-shaped data (``text``, ``label``): loading, a disjoint shard per site, a shared held-out split.

A source is a Hugging Face hub name (default ``stanfordnlp/imdb``) or a local path:
  * a folder written by ``DatasetDict.save_to_disk``;
  * a folder holding ``train.<ext>`` and optionally ``test.<ext>`` (parquet, jsonl, json or csv);
  * a single parquet / jsonl / json / csv file.
Without a ``test`` split, a fixed 10 % of ``train`` is held out (same seed everywhere, so all sites agree).
"""

import hashlib
import os

DEFAULT_DATASET = "stanfordnlp/imdb"
TEXT_FIELD = "text"
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


def fingerprint(dataset) -> str:
    """Short hash of a split's texts: lets logs and tests tell shards apart without printing data."""
    h = hashlib.sha256()
    for text in dataset[TEXT_FIELD]:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]


def site_split(
    source: str,
    site_index: int,
    num_sites: int,
    seed: int = 42,
    max_train_samples: int = 0,
    eval_samples: int = 0,
):
    """(train shard of this site, held-out evaluation split shared by all sites)."""
    ds = load_text_dataset(source, seed=seed)
    train = ds["train"].select(shard_indices(len(ds["train"]), site_index, num_sites, seed))
    if max_train_samples and max_train_samples < len(train):
        train = train.select(range(max_train_samples))
    test = ds["test"].shuffle(seed=seed)
    if eval_samples and eval_samples < len(test):
        test = test.select(range(eval_samples))
    keep = [TEXT_FIELD]
    return train.select_columns(keep), test.select_columns(keep)
