import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_CODE = os.path.join(ROOT, "app_code")
SCRIPTS = os.path.join(ROOT, "scripts")
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (APP_CODE, SCRIPTS, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

# Tests never reach the Hugging Face hub: everything runs on the tiny assets made below.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny GPT-2 + tokenizer and an IMDB-shaped dataset, made offline once per test session."""
    import make_tiny_assets

    out = tmp_path_factory.mktemp("tiny")
    assert make_tiny_assets.main(["--out", str(out)]) == 0
    return {"model": str(out / "model"), "dataset": str(out / "imdb"), "root": str(out)}


# --- the server workflow (app_code/controller.py) with a real cell, its sends recorded -----------------------------

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
    """FedAvgWithDeadline with that cell; NVFlare's send path runs down to Controller.broadcast, which records the
    task instead of scheduling it."""
    from nvflare.apis.dxo import from_shareable
    from nvflare.apis.fl_context import FLContext

    from controller import FedAvgWithDeadline

    sent = []

    def broadcast(self, task, targets=None, min_responses=0, wait_time_after_min_received=0, fl_ctx=None):
        sent.append({"params": from_shareable(task.data).data, "timeout": task.timeout, "targets": targets})

    monkeypatch.setattr(FedAvgWithDeadline, "broadcast", broadcast)
    c = FedAvgWithDeadline(num_clients=2, round_timeout=30)
    c.engine, c.fl_ctx, c.current_round, c.sent, c.logs = _Engine(cell), FLContext(), 0, sent, []
    c.info = c.warning = lambda msg, *a, **k: c.logs.append(msg)
    return c
