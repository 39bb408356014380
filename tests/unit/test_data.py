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
