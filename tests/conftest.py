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
