"""Fixtures for every test folder; the folder sets the marker: tests/integration -> integration, tests/e2e -> e2e."""

import datetime
import functools
import json
import os
import subprocess

import pytest

from fl_deploy import ROOT

TESTS = os.path.dirname(os.path.abspath(__file__))
if not os.path.samefile(ROOT, os.path.dirname(TESTS)):
    raise RuntimeError(f"the venv imports the project from {ROOT}, not from this checkout: run scripts/install_venv.sh "
                       "here (scripts/test.sh does) so that .venv's project.pth points at this checkout")

# Tests never reach the Hugging Face hub: everything runs on the tiny assets made below.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Figures the tests measure (seconds, MiB, counts): one JSON line each, with the test, the UTC date and the commit,
# appended to this file (FL_FIGURES_FILE elsewhere) and listed in pytest's summary. The docs quote a run's file,
# committed as docs/data/test-figures-<date>.jsonl, never a hand-copied number (tests/unit/test_docs_figures.py).
FIGURES_FILE = os.environ.get("FL_FIGURES_FILE") or os.path.join(ROOT, "test-output", "figures.jsonl")
_reported = []


@functools.lru_cache(maxsize=None)
def _commit() -> str:
    """The commit the run started from (read once: later commits during a long run do not relabel its figures)."""
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


@pytest.fixture
def figures(request):
    """figures(text): report a figure this test measured (a sentence with its numbers and units)."""
    def record(text: str):
        entry = {"test": request.node.nodeid, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                 "commit": _commit(), "figure": " ".join(str(text).split())}
        os.makedirs(os.path.dirname(FIGURES_FILE), exist_ok=True)
        with open(FIGURES_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
        _reported.append(entry)
    return record


def pytest_terminal_summary(terminalreporter):
    if _reported:
        terminalreporter.section(f"figures (also in {os.path.relpath(FIGURES_FILE, ROOT)})")
        for entry in _reported:
            terminalreporter.write_line(f"{entry['test']}: {entry['figure']}")


def pytest_collection_modifyitems(items):
    for item in items:
        folder = os.path.relpath(str(item.path), TESTS).split(os.sep)[0]
        if folder in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny GPT-2 + tokenizer and an IMDB-shaped dataset, made offline once per test session."""
    from fl_deploy import make_tiny_assets

    out = tmp_path_factory.mktemp("tiny")
    assert make_tiny_assets.main(["--out", str(out)]) == 0
    return {"model": str(out / "model"), "dataset": str(out / "imdb"), "root": str(out)}


@pytest.fixture(scope="session")
def tiny_arch_model(tiny_assets, tmp_path_factory):
    """tiny_arch_model(arch) -> folder: a tiny random model of ``arch`` (make_tiny_assets.ARCHS: llama, qwen2, ...)
    with the tiny tokenizer, made offline once per test session."""
    from transformers import AutoTokenizer

    from fl_deploy import make_tiny_assets

    made = {}

    def make(arch: str) -> str:
        if arch not in made:
            tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
            made[arch] = make_tiny_assets.save_random_model(str(tmp_path_factory.mktemp(arch)), tokenizer, arch)
        return made[arch]
    return make


# --- the server workflow (app_code/fl_server/fedavg.py) with a real cell, its sends recorded -----------------------------

class _Engine:
    def __init__(self, cell):
        self.cell = cell

    def get_cell(self):
        return self.cell


@pytest.fixture(scope="session")
def cell():
    """A server cell, not started: creating a download transaction needs none."""
    from nvflare.fuel.f3.cellnet.cell import Cell

    return Cell(fqcn="bcast-test-server", root_url="tcp://127.0.0.1:1", secure=False, credentials={})


@pytest.fixture
def controller(monkeypatch, cell):
    """LargeModelFedAvg with that cell; NVFlare's send path runs down to Controller.broadcast, which records the
    task instead of scheduling it."""
    from nvflare.apis.dxo import from_shareable
    from nvflare.apis.fl_context import FLContext

    from fl_server.fedavg import LargeModelFedAvg

    sent = []

    def broadcast(self, task, targets=None, min_responses=0, wait_time_after_min_received=0, fl_ctx=None):
        sent.append({"params": from_shareable(task.data).data, "timeout": task.timeout, "targets": targets})

    monkeypatch.setattr(LargeModelFedAvg, "broadcast", broadcast)
    c = LargeModelFedAvg(num_clients=2, round_timeout=30)
    c.engine, c.fl_ctx, c.current_round, c.sent, c.logs = _Engine(cell), FLContext(), 0, sent, []
    c.info = c.warning = lambda msg, *a, **k: c.logs.append(msg)
    return c
