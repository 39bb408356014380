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


# ---------------------------------------------------------------- per-round semantics (begin_round)

STEPS, ROUNDS, LR = 3, 3, 1e-3


def _cosine(step: int, total: int) -> float:
    """Hugging Face's cosine schedule without warm-up (get_cosine_schedule_with_warmup, num_cycles 0.5)."""
    return LR * 0.5 * (1.0 + math.cos(math.pi * step / total))


class _LrOfEachStep:
    """A TrainerCallback that records the learning rate each optimizer step uses (read just before the step)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Recorder(TrainerCallback):
            def __init__(self):
                self.lrs = []

            def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
                self.lrs.append(optimizer.param_groups[0]["lr"])

        return Recorder()


def _trainer(tiny_assets, tmp_path, *flags):
    from fl_common.model import load_model_and_tokenizer
    from fl_site.data import site_split
    from fl_site.training import build_trainer

    s = parse_settings(["--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"], "--max_steps",
                        str(STEPS), "--batch_size", "2", "--grad_accum", "1", "--learning_rate", str(LR),
                        "--eval_samples", "4", *flags])
    train_ds, eval_ds = site_split(s.dataset, 0, 2, eval_samples=s.eval_samples)
    model, tokenizer = load_model_and_tokenizer(s.model)
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, s, str(tmp_path / "out"))
    recorder = _LrOfEachStep()
    trainer.add_callback(recorder)
    return trainer, trainer.train_dataset, s, recorder


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer during train()


def _adam_steps(optimizer) -> set:
    return {int(state["step"]) for state in _inner(optimizer).state.values()}


@pytest.mark.parametrize("option", ["reset", "carry"])
def test_optimizer_at_the_start_of_round_2(tiny_assets, tmp_path, option):
    from fl_site.training import begin_round

    trainer, shard, s, _ = _trainer(tiny_assets, tmp_path, "--optimizer_state", option)
    begin_round(trainer, shard, s, 0, ROUNDS)
    trainer.train()
    after_round_1 = _inner(trainer.optimizer)
    assert _adam_steps(after_round_1) == {STEPS}

    begin_round(trainer, shard, s, 1, ROUNDS)
    if option == "reset":
        assert _inner(trainer.optimizer) is not after_round_1
        assert _adam_steps(trainer.optimizer) == set()  # new AdamW: no moments, step count 0
    else:
        assert _inner(trainer.optimizer) is after_round_1
        assert _adam_steps(trainer.optimizer) == {STEPS}  # the moments of round 1 and their step count
    trainer.train()
    assert _adam_steps(trainer.optimizer) == ({STEPS} if option == "reset" else {2 * STEPS})


@pytest.mark.parametrize("schedule", ["round", "job"])
def test_learning_rate_at_the_first_step_of_round_2(tiny_assets, tmp_path, schedule):
    from fl_site.training import begin_round

    trainer, shard, s, recorder = _trainer(tiny_assets, tmp_path, "--lr_schedule", schedule)
    plans = []
    for rnd in range(ROUNDS):
        plans.append(begin_round(trainer, shard, s, rnd, ROUNDS))
        trainer.train()
    assert len(recorder.lrs) == ROUNDS * STEPS
    first_of_round_2 = recorder.lrs[STEPS]
    if schedule == "round":  # the cosine restarts at the peak rate every round
        assert first_of_round_2 == pytest.approx(LR)
        expected = [_cosine(i, STEPS) for _ in range(ROUNDS) for i in range(STEPS)]
    else:  # one cosine over the job's 9 steps: round 2 starts at step 3 of 9
        assert first_of_round_2 == pytest.approx(_cosine(STEPS, ROUNDS * STEPS)) == pytest.approx(0.75 * LR)
        expected = [_cosine(i, ROUNDS * STEPS) for i in range(ROUNDS * STEPS)]
    assert recorder.lrs == pytest.approx(expected)
    assert plans[1]["lr"] == pytest.approx(first_of_round_2)


def test_warm_up_happens_once_with_the_job_schedule(tiny_assets, tmp_path):
    from fl_site.training import begin_round

    lrs = {}
    for schedule in ("round", "job"):
        trainer, shard, s, recorder = _trainer(tiny_assets, tmp_path / schedule, "--lr_schedule", schedule,
                                               "--warmup_ratio", "0.1")
        for rnd in range(ROUNDS):
            begin_round(trainer, shard, s, rnd, ROUNDS)
            trainer.train()
        lrs[schedule] = recorder.lrs
    # Warm-up: ceil(0.1 x 3) = 1 step of each round (round), ceil(0.1 x 9) = 1 step of the job (job).
    assert [lrs["round"][r * STEPS] for r in range(ROUNDS)] == [0.0] * ROUNDS
    assert lrs["job"][0] == 0.0 and min(lrs["job"][1:]) > 0.0
    assert lrs["job"][-1] < lrs["job"][STEPS] < lrs["job"][1]  # decays over the job, not within each round


def test_resumed_job_continues_the_job_schedule(tiny_assets, tmp_path):
    """A job resumed at round 2 (NVFlare sends start_round=1, total_rounds=2) starts where the uninterrupted job's
    round 2 started, in a new process: a new trainer and a new optimizer."""
    from nvflare.app_common.abstract.fl_model import FLModel

    from fl_site.training import begin_round, job_rounds

    trainer, shard, s, recorder = _trainer(tiny_assets, tmp_path / "whole", "--lr_schedule", "job")
    for rnd in range(ROUNDS):
        begin_round(trainer, shard, s, rnd, ROUNDS)
        trainer.train()

    task = FLModel(params={}, start_round=1, current_round=1, total_rounds=ROUNDS - 1)
    assert job_rounds(task) == ROUNDS
    resumed, shard2, s2, recorder2 = _trainer(tiny_assets, tmp_path / "resumed", "--lr_schedule", "job")
    plan = begin_round(resumed, shard2, s2, task.current_round, job_rounds(task))
    assert plan == {"first_step": STEPS, "total_steps": ROUNDS * STEPS, "lr": pytest.approx(0.75 * LR)}
    for rnd in range(task.current_round, job_rounds(task)):
        if rnd > task.current_round:
            begin_round(resumed, shard2, s2, rnd, job_rounds(task))
        resumed.train()
    assert recorder2.lrs[0] == pytest.approx(recorder.lrs[STEPS])  # the resumed job's first learning rate
    assert recorder2.lrs == pytest.approx(recorder.lrs[STEPS:])


def test_job_rounds_needs_total_rounds():
    from nvflare.app_common.abstract.fl_model import FLModel

    from fl_site.training import job_rounds

    assert job_rounds(FLModel(params={}, current_round=0, total_rounds=5)) == 5  # no start_round: a fresh job
    with pytest.raises(ValueError, match="total_rounds"):
        job_rounds(FLModel(params={}, current_round=0))


def test_steps_per_round_is_the_trainers_own_count_in_epoch_mode(tiny_assets, tmp_path):
    from fl_site.training import begin_round, steps_per_round

    trainer, shard, s, _ = _trainer(tiny_assets, tmp_path, "--max_steps", "-1", "--batch_size", "16",
                                    "--grad_accum", "3", "--num_train_epochs", "0.5")
    plan = begin_round(trainer, shard, s, 0, 2)
    trainer.train()
    assert trainer.state.global_step == steps_per_round(s, len(shard)) == plan["total_steps"] // 2 == 3  # 13 / 3 / 2


@pytest.mark.parametrize("flag,value", [("--optimizer_state", "keep"), ("--lr_schedule", "epoch"),
                                        ("--partition", "dirichlet")])
def test_semantics_settings_reject_unknown_choices(flag, value):
    with pytest.raises((SystemExit, ValueError)):
        parse_settings([flag, value])
    with pytest.raises(ValueError, match=flag):
        TrainSettings(**{flag[2:]: value})


# ---------------------------------------------------------------- precision (bf16 only where the GPU has it)


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device: set its compute capability; it reports bf16 support the way torch does by default
    (including_emulation=True): yes on every CUDA GPU."""
    import torch

    def make(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return make


def test_emulated_bf16_gpu_trains_in_fp32(gpu):
    from fl_site.training import choose_precision

    gpu((7, 5))  # T4 / RTX 20xx
    bf16, why = choose_precision(TrainSettings())
    assert bf16 is False
    assert why.startswith("fp32") and "7.5" in why and "--bf16 true" in why


def test_native_bf16_gpu_trains_in_bf16(gpu):
    from fl_site.training import choose_precision

    gpu((8, 0))  # A100
    assert choose_precision(TrainSettings()) == (True, "bf16: native on this GPU (compute capability 8.0)")


def test_explicit_bf16_wins(gpu):
    from fl_site.training import choose_precision

    gpu((7, 5))
    bf16, why = choose_precision(parse_settings(["--bf16", "true"]))
    assert bf16 is True and "--bf16 true" in why
    gpu((9, 0))
    assert choose_precision(parse_settings(["--bf16", "false"]))[0] is False


def test_cpu_trains_in_fp32_whatever_is_asked():
    import torch

    from fl_site.training import choose_precision

    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    assert choose_precision(TrainSettings(bf16=True)) == (False, "fp32: no CUDA device")


# ---------------------------------------------------------------- what the docs say about it (issue 15, case 7)


@pytest.mark.parametrize("doc", ["README.md", "docs/reliability.md"])
def test_docs_state_the_per_round_semantics_the_code_has(doc):
    """The known-limits statement names each per-round setting with the default TrainSettings has, and no longer
    claims the old accidental behaviour (optimizer carried, schedule restarted, whatever the settings)."""
    import re

    from fl_deploy import ROOT

    with open(os.path.join(ROOT, doc)) as f:
        text = " ".join(f.read().split())
    for name in ("optimizer_state", "lr_schedule"):
        stated = re.findall(rf"`{name}`[^.;]*?default `([\w-]+)`", text)
        assert stated, f"{doc} does not state {name}'s default"
        assert set(stated) == {getattr(TrainSettings(), name)}, (doc, name, stated)
    assert "learning-rate schedule restarts at every round" not in text
    assert "No test covers the optimizer's carry-over" not in text
