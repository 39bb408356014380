"""The tiny offline dataset (fl_deploy.make_tiny_assets): the default the tests use, and --films for the quality benchmark."""

import re

import pytest

from fl_deploy import make_tiny_assets


def _rows(tmp_path, films, n=600):
    import pandas as pd

    make_tiny_assets.make_dataset(str(tmp_path), n, 50, seed=3, films=films)
    return pd.read_parquet(tmp_path / "train.parquet")


def test_default_reviews_name_no_film(tmp_path):
    rows = _rows(tmp_path, 0)
    assert not rows["text"].str.contains("directed by").any()
    assert sorted(rows["label"].unique()) == [0, 1]


def test_films_are_a_fixed_catalogue_with_fixed_facts_and_label(tmp_path):
    rows = _rows(tmp_path, 40)
    facts = {}
    for text, label in zip(rows["text"], rows["label"]):
        m = re.match(r"(The \w+ \w+) \((\d{4})\), directed by (\w+ \w+)\. ", text)
        assert m, text
        facts.setdefault(m.group(1), set()).add((m.group(2), m.group(3), label))
    assert all(len(v) == 1 for v in facts.values())  # a film always has the same year, director and label
    assert 20 < len(facts) <= 40
    counts = rows["text"].str.extract(r"^(The \w+ \w+)")[0].value_counts()
    assert counts.iloc[0] > 4 * counts.iloc[-1]  # Zipf popularity: the head is far more frequent than the tail


@pytest.mark.parametrize("films", ["1", "-2", "100000"])
def test_bad_film_count_is_refused(tmp_path, films):
    with pytest.raises(SystemExit) as e:
        make_tiny_assets.main(["--out", str(tmp_path), "--films", films])
    assert e.value.code == 2
