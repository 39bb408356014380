"""Figures in the docs come from runs: a doc quotes a measured figure as a link to the dated record of the run that
measured it, `[words of the figure](data/test-figures-<date>.jsonl)` (the `figures` fixture of tests/conftest.py
writes those records; a run's file is committed under docs/data/). The quoted words must stand in a figure of that
file, so a figure changed by hand, or a record replaced by a later run, fails here instead of going stale."""

import glob
import json
import os
import re

from fl_deploy import ROOT

DOCS = os.path.join(ROOT, "docs")
QUOTE = re.compile(r"\[([^\]]+)\]\(((?:\.\./)*data/test-figures-\d{4}-\d\d-\d\d\.jsonl)\)")


def quotes() -> list:
    """(doc, quoted words, the record file it names)."""
    found = []
    for doc in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True):
        with open(doc) as f:
            for words, link in QUOTE.findall(f.read()):
                found.append((os.path.relpath(doc, ROOT), " ".join(words.split()),
                              os.path.normpath(os.path.join(os.path.dirname(doc), link))))
    return found


def test_every_quoted_figure_stands_in_the_record_it_links():
    found = quotes()
    assert found, "no doc quotes a recorded figure: docs/reliability.md's figures link docs/data/test-figures-*.jsonl"
    for doc, words, record in found:
        assert os.path.isfile(record), f"{doc} links {record}, which does not exist"
        with open(record) as f:
            figures = [json.loads(line)["figure"] for line in f if line.strip()]
        assert any(words in figure for figure in figures), f"{doc}: '{words}' is in no figure of {record}"


def test_a_record_names_its_test_date_and_commit():
    for record in glob.glob(os.path.join(DOCS, "data", "test-figures-*.jsonl")):
        date = re.search(r"(\d{4}-\d\d-\d\d)", record).group(1)
        with open(record) as f:
            for line in filter(str.strip, f):
                entry = json.loads(line)
                assert entry["date"] == date and entry["commit"] and "::" in entry["test"], (record, entry)
