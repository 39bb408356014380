"""Data loading, per-site sharding and the shared held-out split (app_code/data.py)."""

import json
import os

import pytest

from fl_site.data import DataError, fingerprint, load_text_dataset, shard_indices, site_split


# ---------------------------------------------------------------- shard_indices


@pytest.mark.parametrize("num_rows,num_sites", [(10, 1), (10, 3), (101, 4), (7, 7), (400, 2)])
def test_shards_are_disjoint_cover_all_rows_and_are_balanced(num_rows, num_sites):
    shards = [shard_indices(num_rows, i, num_sites) for i in range(num_sites)]
    flat = [i for s in shards for i in s]
    assert len(flat) == num_rows, "shard sizes must add up to the row count"
    assert len(set(flat)) == num_rows, "a row appears in more than one shard"
    assert set(flat) == set(range(num_rows))
    for s in shards:
        assert all(isinstance(i, int) for i in s)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes


def test_shards_are_deterministic_for_a_seed_and_change_with_the_seed():
    a = shard_indices(200, 1, 3, seed=42)
    assert a == shard_indices(200, 1, 3, seed=42)
    b = shard_indices(200, 1, 3, seed=7)
    assert a != b
    # The assignment is shuffled, not a contiguous block of rows.
    assert a != sorted(a)


@pytest.mark.parametrize(
    "num_rows,site_index,num_sites,words",
    [
        (10, 2, 2, ["site index 2", "out of range"]),
        (10, 5, 2, ["site index 5", "out of range"]),
        (10, -1, 2, ["site index -1", "out of range"]),
        (10, 0, 0, ["number of sites", "at least 1"]),
        (10, 0, -3, ["number of sites", "at least 1"]),
        (3, 0, 4, ["3 training rows", "4 sites"]),
    ],
)
def test_bad_shard_requests_raise_a_clear_data_error(num_rows, site_index, num_sites, words):
    with pytest.raises(DataError) as e:
        shard_indices(num_rows, site_index, num_sites)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {str(e.value)!r}"


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- load_text_dataset


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _rows(n, prefix="review"):
    return [{"text": f"{prefix} number {i} was fine.", "label": i % 2} for i in range(n)]


def test_load_parquet_folder_keeps_train_and_test(tiny_assets):
    import pandas as pd

    ds = load_text_dataset(tiny_assets["dataset"])
    assert set(ds.keys()) == {"train", "test"}
    train = pd.read_parquet(os.path.join(tiny_assets["dataset"], "train.parquet"))
    test = pd.read_parquet(os.path.join(tiny_assets["dataset"], "test.parquet"))
    assert ds["train"]["text"] == train["text"].tolist()
    assert ds["test"]["text"] == test["text"].tolist()
    assert "label" in ds["train"].column_names


def test_single_jsonl_file_gets_a_deterministic_ten_percent_test_split(tmp_path):
    rows = _rows(50)
    path = tmp_path / "reviews.jsonl"
    _write_jsonl(path, rows)
    ds = load_text_dataset(str(path))
    assert set(ds.keys()) == {"train", "test"}
    assert len(ds["test"]) == 5 and len(ds["train"]) == 45
    all_texts = {r["text"] for r in rows}
    assert set(ds["train"]["text"]) | set(ds["test"]["text"]) == all_texts
    assert not set(ds["train"]["text"]) & set(ds["test"]["text"])
    again = load_text_dataset(str(path))
    assert again["test"]["text"] == ds["test"]["text"]
    assert again["train"]["text"] == ds["train"]["text"]


def test_save_to_disk_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    dd = DatasetDict(
        train=Dataset.from_list(_rows(12, "train")),
        test=Dataset.from_list(_rows(4, "test")),
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    ds = load_text_dataset(str(tmp_path / "saved"))
    assert ds["train"]["text"] == dd["train"]["text"]
    assert ds["test"]["text"] == dd["test"]["text"]


def test_folder_with_only_train_csv_gets_a_held_out_split(tmp_path):
    import pandas as pd

    rows = _rows(30)
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    ds = load_text_dataset(str(tmp_path))
    assert set(ds.keys()) == {"train", "test"}
    assert len(ds["train"]) + len(ds["test"]) == 30
    assert len(ds["test"]) == 3
    assert set(ds["train"]["text"]) | set(ds["test"]["text"]) == {r["text"] for r in rows}


def test_missing_path_is_a_data_error(tmp_path):
    missing = str(tmp_path / "no-such-data")
    with pytest.raises(DataError) as e:
        load_text_dataset(missing)
    assert missing in str(e.value)
    assert "does not exist" in str(e.value)


def test_folder_without_train_file_is_a_data_error(tmp_path):
    _write_jsonl(tmp_path / "test.jsonl", _rows(5))
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(DataError) as e:
        load_text_dataset(str(tmp_path))
    assert "train" in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_file_without_text_column_is_a_data_error(tmp_path):
    path = tmp_path / "reviews.jsonl"
    _write_jsonl(path, [{"review": f"r{i}", "label": 0} for i in range(10)])
    with pytest.raises(DataError) as e:
        load_text_dataset(str(path))
    assert "'text'" in str(e.value)
    assert "review" in str(e.value), "the message should list the columns that are there"


def test_empty_source_is_a_data_error():
    with pytest.raises(DataError):
        load_text_dataset("")


# ---------------------------------------------------------------- site_split


def test_site_split_gives_disjoint_train_shards_and_a_shared_eval_split(tiny_assets):
    src = tiny_assets["dataset"]
    full = load_text_dataset(src)["train"]["text"]
    n = len(full)

    train0, eval0 = site_split(src, 0, 2)
    train1, eval1 = site_split(src, 1, 2)

    assert fingerprint(train0) != fingerprint(train1)
    idx0, idx1 = shard_indices(n, 0, 2), shard_indices(n, 1, 2)
    assert not set(idx0) & set(idx1)
    assert train0["text"] == [full[i] for i in idx0]
    assert train1["text"] == [full[i] for i in idx1]
    assert len(train0) + len(train1) == n

    assert fingerprint(eval0) == fingerprint(eval1)
    assert eval0["text"] == eval1["text"]
    assert train0.column_names == ["text"] and eval0.column_names == ["text"]


def test_site_split_honours_max_train_samples_and_eval_samples(tiny_assets):
    src = tiny_assets["dataset"]
    full_train, full_eval = site_split(src, 0, 2)
    train, ev = site_split(src, 0, 2, max_train_samples=7, eval_samples=5)
    assert len(train) == 7
    assert len(ev) == 5
    assert train["text"] == full_train["text"][:7]
    assert ev["text"] == full_eval["text"][:5]
    # Caps larger than the data leave it whole.
    big_train, big_eval = site_split(src, 0, 2, max_train_samples=10**6, eval_samples=10**6)
    assert len(big_train) == len(full_train) and len(big_eval) == len(full_eval)


def test_site_split_rejects_a_site_outside_the_federation(tiny_assets):
    with pytest.raises(DataError, match="out of range"):
        site_split(tiny_assets["dataset"], 2, 2)


# ---------------------------------------------------------------- label-skew partition


def _labels(n=2000, classes=2):
    return [i % classes for i in range(n)]


def _skew(shards, labels) -> float:
    """Mean over sites of the total variation distance between the site's label mix and the whole split's."""
    import numpy as np

    labels = np.asarray(labels)
    classes = np.unique(labels)
    overall = np.array([(labels == c).mean() for c in classes])
    tv = []
    for shard in shards:
        mix = np.array([(labels[shard] == c).mean() for c in classes])
        tv.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(tv))


@pytest.mark.parametrize("num_sites,classes", [(2, 2), (3, 2), (4, 5)])
def test_label_skew_shards_are_disjoint_and_cover_every_row(num_sites, classes):
    from fl_site.data import label_skew_indices

    labels = _labels(1000, classes)
    shards = label_skew_indices(labels, num_sites, alpha=0.3, seed=1)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(len(labels)))  # disjoint and complete
    assert min(len(s) for s in shards) >= 0.1 * len(labels) / num_sites


def test_label_skew_is_deterministic_and_seeded():
    from fl_site.data import label_skew_indices, partition_indices

    labels = _labels()
    a = label_skew_indices(labels, 3, alpha=0.5, seed=42)
    assert a == label_skew_indices(labels, 3, alpha=0.5, seed=42)
    assert a != label_skew_indices(labels, 3, alpha=0.5, seed=7)
    assert [partition_indices(labels, i, 3, "label-skew", 0.5, 42) for i in range(3)] == a
    assert a[0] != sorted(a[0])  # shuffled: a cap on the shard keeps a random part of it, not one label first


def test_label_counts_follow_alpha():
    """Small alpha: each site holds mostly one label; large alpha: every site near the overall mix. Measured as
    the mean total-variation distance from the overall mix, over 20 seeds, against IID's."""
    from fl_site.data import label_skew_indices, shard_indices

    labels = _labels(2000, 2)
    skew = {a: sum(_skew(label_skew_indices(labels, 2, a, seed), labels) for seed in range(20)) / 20
            for a in (0.05, 1.0, 100.0)}
    iid = sum(_skew([shard_indices(len(labels), i, 2, seed) for i in range(2)], labels) for seed in range(20)) / 20
    assert skew[0.05] > skew[1.0] > skew[100.0] > iid
    assert skew[0.05] > 0.3  # Beta(0.05, 0.05) puts most of each label on one site
    assert skew[100.0] < 0.05  # Beta(100, 100) is within a few % of an even split


def test_label_skew_errors_are_data_errors():
    from fl_site.data import label_skew_indices, partition_indices

    with pytest.raises(DataError, match="alpha"):
        label_skew_indices(_labels(), 2, alpha=0)
    with pytest.raises(DataError, match="out of range"):
        partition_indices(_labels(), 2, 2, "label-skew")
    with pytest.raises(DataError, match="unknown partition"):
        partition_indices(_labels(), 0, 2, "pathological")
    with pytest.raises(DataError, match="dirichlet_alpha"):
        label_skew_indices(_labels(20), 10, alpha=0.01, seed=0)  # 10 sites, 20 rows, extreme skew: never balanced


def test_site_data_under_label_skew_keeps_the_held_out_split_shared(tiny_assets):
    from fl_site.data import load_site_data

    src = tiny_assets["dataset"]
    iid = [load_site_data(src, i, 2) for i in range(2)]
    skew = [load_site_data(src, i, 2, partition="label-skew", alpha=0.1) for i in range(2)]
    full = load_text_dataset(src)["train"]
    assert sorted(list(skew[0].train["text"]) + list(skew[1].train["text"])) == sorted(full["text"])
    assert list(skew[0].held_out["text"]) == list(skew[1].held_out["text"]) == list(iid[0].held_out["text"])
    for d in skew:
        assert sum(d.label_counts.values()) == len(d.train)
        assert set(d.label_counts) <= {0, 1}
    assert {k: iid[0].label_counts[k] + iid[1].label_counts[k] for k in (0, 1)} == {
        k: skew[0].label_counts.get(k, 0) + skew[1].label_counts.get(k, 0) for k in (0, 1)}

    def gap(sites):  # how far apart the two sites' shares of label 1 are
        share = [d.label_counts.get(1, 0) / len(d.train) for d in sites]
        return abs(share[0] - share[1])

    assert gap(skew) > gap(iid) + 0.2, ([d.label_counts for d in skew], [d.label_counts for d in iid])


def test_label_skew_needs_a_label_column(tmp_path):
    from fl_site.data import load_site_data

    path = tmp_path / "reviews.jsonl"
    _write_jsonl(path, [{"text": f"review {i}"} for i in range(20)])
    with pytest.raises(DataError, match="label"):
        load_site_data(str(path), 0, 2, partition="label-skew")
    assert load_site_data(str(path), 0, 2).label_counts == {}
