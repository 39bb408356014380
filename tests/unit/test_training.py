"""Training configuration (app_code/fl_site/training.py) and the standalone trainer (python -m fl_site.trainer)."""

import json
import math
import os
import subprocess
import sys

import pytest

from fl_site.training import TrainSettings, parse_settings, sft_config



# ---------------------------------------------------------------- settings


def test_defaults_are_the_upstream_sft_config():
    s = parse_settings([])
    assert s.batch_size == 16
    assert s.grad_accum == 2
    assert s.num_train_epochs == 1.0
    assert s.learning_rate == 2e-4
    assert s.lr_scheduler_type == "cosine"
    assert s.gradient_checkpointing is True
    assert s.max_length == 128
    assert s.model == "gpt2"
    assert s.dataset == "stanfordnlp/imdb"
    assert s.max_steps == 200  # per round in FL (the job's default), in all standalone
    assert s == TrainSettings()


def test_flags_override_defaults():
    s = parse_settings([
        "--batch_size", "4", "--grad_accum", "3", "--num_train_epochs", "2.5", "--learning_rate", "1e-3",
        "--lr_scheduler_type", "linear", "--no_gradient_checkpointing", "--max_length", "64",
        "--model", "/models/tiny", "--dataset", "/data/imdb", "--max_steps", "7", "--sites", "a,b",
        "--exchange_only",
    ])
    assert (s.batch_size, s.grad_accum, s.num_train_epochs, s.learning_rate) == (4, 3, 2.5, 1e-3)
    assert s.lr_scheduler_type == "linear"
    assert s.gradient_checkpointing is False
    assert s.max_length == 64
    assert (s.model, s.dataset, s.max_steps, s.sites) == ("/models/tiny", "/data/imdb", 7, "a,b")
    assert s.exchange_only is True
    assert parse_settings(["--gradient_checkpointing", "false"]).gradient_checkpointing is False


def test_unknown_flag_is_rejected_not_ignored():
    # HfArgumentParser raises ValueError for leftover arguments (argparse would exit): either way, a typo in
    # the job's task_script_args must not be silently dropped.
    with pytest.raises((SystemExit, ValueError)) as e:
        parse_settings(["--no_such_flag", "1"])
    if isinstance(e.value, SystemExit):
        assert e.value.code != 0
    else:
        assert "--no_such_flag" in str(e.value)


def _value(x):
    return getattr(x, "value", x)


def test_sft_config_matches_the_settings(tmp_path):
    import torch

    s = TrainSettings(batch_size=4, grad_accum=3, max_steps=5, max_length=64)
    c = sft_config(s, str(tmp_path / "out" / "site-7"))
    assert c.loss_type == "nll"
    assert c.report_to in ("none", [], ["none"])
    assert c.use_cpu is (not torch.cuda.is_available())
    if not torch.cuda.is_available():
        assert c.use_cpu is True
        assert c.bf16 is False
    assert c.fp16 is False
    assert c.output_dir.rstrip(os.sep).endswith("site-7")
    assert os.path.dirname(c.output_dir.rstrip(os.sep)) == str(tmp_path / "out")
    assert _value(c.save_strategy) == "no"
    assert c.per_device_train_batch_size == 4
    assert c.gradient_accumulation_steps == 3
    assert c.max_steps == 5
    assert c.max_length == 64
    assert c.learning_rate == 2e-4
    assert _value(c.lr_scheduler_type) == "cosine"
    assert c.gradient_checkpointing is True
    assert c.dataset_text_field == "text"


def test_sft_config_bf16_is_off_on_cpu_even_when_asked(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    c = sft_config(TrainSettings(bf16=True), str(tmp_path / "site-1"))
    assert c.bf16 is False


def test_bf16_by_default_only_where_the_gpu_has_it_natively(monkeypatch):
    """A T4/V100-class GPU emulates bf16 (torch's is_bf16_supported() says yes by default): it trains in fp32."""
    import torch

    from fl_site.training import use_bf16

    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # emulated only, like compute capability 7.x

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert use_bf16(TrainSettings()) is False and asked == [False]
    assert use_bf16(TrainSettings(bf16=True)) is True  # asked for explicitly: the user's call


def test_shard_of_listed_sites():
    s = TrainSettings(sites="site-1, site-2,site-3")
    assert s.site_list() == ["site-1", "site-2", "site-3"]
    assert s.shard_of("site-1") == (0, 3)
    assert s.shard_of("site-2") == (1, 3)
    assert s.shard_of("site-3") == (2, 3)


def test_shard_of_unlisted_site_names_it():
    s = TrainSettings(sites="site-1,site-2")
    with pytest.raises(ValueError) as e:
        s.shard_of("site-9")
    assert "site-9" in str(e.value)


@pytest.mark.parametrize("sites", ["", " , ,"])
def test_shard_of_with_no_sites(sites):
    with pytest.raises(ValueError) as e:
        TrainSettings(sites=sites).shard_of("site-1")
    assert "--sites" in str(e.value) and "empty" in str(e.value)


# ---------------------------------------------------------------- standalone trainer


def _run_trainer(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "fl_site.trainer", *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300
    )


def _last_json(stdout: str) -> dict:
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    assert starts, f"no JSON block in stdout:\n{stdout[-2000:]}"
    return json.loads("\n".join(lines[starts[-1]:]))


def _error_lines(stderr: str) -> list:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]


def test_standalone_trainer_trains_and_saves(tiny_assets, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    r = _run_trainer(
        ["--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"], "--site_index", "0",
         "--num_sites", "2", "--max_steps", "2", "--batch_size", "4", "--eval_samples", "8",
         "--output_dir", str(out)],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    metrics = _last_json(r.stdout)
    assert metrics["steps"] == 2
    for key in ("train_loss", "eval_loss_before", "eval_loss", "perplexity"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-6)

    model_dir = metrics["model_dir"]
    if not os.path.isabs(model_dir):
        model_dir = os.path.join(str(tmp_path), model_dir)
    assert os.path.commonpath([model_dir, str(out)]) == str(out), "model saved outside --output_dir"
    trained = AutoModelForCausalLM.from_pretrained(model_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_assets["model"])
    t_state, i_state = trained.state_dict(), initial.state_dict()
    assert set(t_state) == set(i_state)
    changed = [k for k in i_state if not torch.equal(t_state[k], i_state[k])]
    assert changed, "the saved weights equal the initial model: nothing was trained"


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing_model", ["model path", "no-such-model", "does not exist"]),
        ("missing_dataset", ["dataset path", "no-such-data", "does not exist"]),
        ("bad_site", ["site index 5", "out of range"]),
    ],
)
def test_trainer_cli_reports_bad_input_in_one_line(tiny_assets, tmp_path, case, expected):
    model, dataset, extra = tiny_assets["model"], tiny_assets["dataset"], []
    if case == "missing_model":
        model = str(tmp_path / "no-such-model")
    elif case == "missing_dataset":
        dataset = str(tmp_path / "no-such-data")
    else:
        extra = ["--site_index", "5", "--num_sites", "2"]
    r = _run_trainer(
        ["--model", model, "--dataset", dataset, "--max_steps", "1", "--output_dir", str(tmp_path / "out"), *extra],
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    errors = _error_lines(r.stderr)
    assert len(errors) == 1, r.stderr[-4000:]
    for word in expected:
        assert word in errors[0], (word, errors[0])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("model.safetensors"))


def test_rounds_walk_through_the_shard_instead_of_repeating_it():
    """Trainer.train() restarts its sampler from the same seed each call: round_rows must hand each FL round new
    rows (the first rounds of a shard disjoint, the whole shard covered before any row repeats)."""
    from datasets import Dataset
    from fl_site.training import parse_settings, round_rows

    shard = Dataset.from_dict({"row": list(range(100))})
    s = parse_settings(["--max_steps", "5", "--batch_size", "4", "--grad_accum", "2"])  # 40 rows a round
    rounds = [round_rows(shard, s, r)["row"] for r in range(5)]
    assert all(len(r) == 40 for r in rounds)
    assert not set(rounds[0]) & set(rounds[1])  # rounds 1 and 2: no row twice
    assert set(rounds[0]) | set(rounds[1]) | set(rounds[2]) == set(range(100))  # 120 rows: the shard, then more
    assert rounds[3] != rounds[1]  # the next pass over the shard is in a new order
    assert round_rows(shard, s, 3)["row"] == rounds[3]  # deterministic: a resumed job trains the same rows
    epochs = parse_settings(["--max_steps", "-1"])
    a, b = round_rows(shard, epochs, 0)["row"], round_rows(shard, epochs, 1)["row"]
    assert sorted(a) == sorted(b) == list(range(100)) and a != b  # whole shard, new order each round
