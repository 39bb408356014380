"""The offline flow: fetch once into assets/, then load from there with the hub switched off."""

import os
import subprocess
import sys

from fl_deploy.harness import local_federation


def test_fetched_assets_load_offline(tmp_path, tiny_assets, monkeypatch):
    from fl_deploy import fetch_assets
    from fl_site.data import load_text_dataset
    from fl_common.model import load_model_and_tokenizer

    # Local sources stand in for the hub here; the layout written is the same for hub names.
    assert fetch_assets.main(["--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"],
                              "--out", str(tmp_path)]) == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_model_and_tokenizer(str(tmp_path / "models" / "model"))
    ds = load_text_dataset(str(tmp_path / "datasets" / "imdb"))
    original = load_text_dataset(tiny_assets["dataset"])
    assert ds["train"]["text"] == original["train"]["text"] and ds["test"]["text"] == original["test"]["text"]
    assert tokenizer.pad_token == tokenizer.eos_token and model.config.vocab_size == len(tokenizer)


def test_hub_unreachable_is_one_clear_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run([sys.executable, os.path.join(local_federation.ROOT, "scripts", "fetch_assets.py"),
                          "--out", str(tmp_path / "assets")], capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.startswith("error: cannot load") and "gpt2" in run.stderr
    assert "Traceback" not in run.stderr
