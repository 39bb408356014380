"""Checks shared by tests in more than one folder (tests/ is on pytest's pythonpath)."""

import csv
import os
from types import SimpleNamespace

import pytest


def read_rows(out) -> dict:
    with open(os.path.join(out, "training_speed.csv")) as f:
        return {(r["precision"], r["run"]): r for r in csv.DictReader(f)}


def check_measurement(out, steps_total, batch):
    rows = read_rows(out)
    alone, fl = rows[("fp32", "standalone")], rows[("fp32", "FL")]
    tokens_per_step = batch * 2 * 128  # grad accum 2, every row fills max_length 128
    for r in (alone, fl):
        assert int(r["steps"]) == steps_total
        assert int(r["tokens"]) == pytest.approx(steps_total * tokens_per_step, rel=1e-3)
        assert float(r["train_s"]) > 0 and float(r["loop_s"]) > 0
        assert float(r["train_tok_s"]) == pytest.approx(int(r["tokens"]) / float(r["train_s"]), rel=1e-3)
    assert float(fl["e2e_tok_s"]) > 0
    assert float(fl["ratio_train"]) == pytest.approx(float(fl["train_tok_s"]) / float(alone["train_tok_s"]),
                                                     abs=1e-3)
    assert float(fl["ratio_e2e"]) == pytest.approx(float(fl["e2e_tok_s"]) / float(alone["train_tok_s"]), abs=1e-3)
    # The round holds the training and more: end-to-end is slower than training alone.
    assert float(fl["e2e_tok_s"]) < float(fl["train_tok_s"])
    with open(os.path.join(out, "training_speed.md")) as f:
        assert "| fp32 | FL (" in f.read()


CLIENT = """\
import nvflare.client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    flare.send(flare.FLModel(params=model.params, metrics={"loss": 0.0}))
"""


def stock_recipe_job(out: str, min_clients: int = 2) -> str:
    """A job exported by NVFlare's own FedAvgRecipe with a small client script: what users bring from NVFlare's
    examples (deploy_map {"app": ["@ALL"]}). Returns the job folder."""
    from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
    from nvflare.client.config import ExchangeFormat

    src = os.path.join(out, "src")
    os.makedirs(src)
    with open(os.path.join(src, "client.py"), "w") as f:
        f.write(CLIENT)
    cwd = os.getcwd()
    os.chdir(src)
    try:
        FedAvgRecipe(name="foreign", model={"path": "torch.nn.Linear", "args": {"in_features": 4, "out_features": 2}},
                     min_clients=min_clients, num_rounds=1, train_script="client.py",
                     server_expected_format=ExchangeFormat.PYTORCH).export(os.path.join(out, "export"))
    finally:
        os.chdir(cwd)
    return os.path.join(out, "export", "foreign")


def tiny_job(out: str, sites: list, rounds: int, tiny_assets: dict, *flags) -> str:
    """The project's job (make_job.py) for the tiny offline assets, 10 steps of batch 4 per round, plus ``flags``."""
    from fl_deploy import make_job

    assert make_job.main(["--out", out, "--sites", ",".join(sites), "--rounds", str(rounds),
                          "--model", tiny_assets["model"], "--dataset", tiny_assets["dataset"],
                          "--max_steps", "10", "--batch_size", "4", "--eval_samples", "16", *flags]) == 0
    return out


def fl_ctx(root):
    from nvflare.apis.fl_constant import FLContextKey, ReservedKey
    from nvflare.apis.fl_context import FLContext

    engine = SimpleNamespace(get_workspace=lambda: SimpleNamespace(get_root_dir=lambda: root))
    ctx = FLContext()
    ctx.set_prop(ReservedKey.ENGINE, engine, private=True, sticky=False)
    ctx.set_prop(ReservedKey.RUN_NUM, "job-1", private=True, sticky=False)
    ctx.set_prop(FLContextKey.APP_ROOT, os.path.join(root, "app_server"), private=True, sticky=False)
    return ctx


def persistor(root, **kwargs):
    """PretrainedModelPersistor initialised in ``root`` as the server does: (persistor, its FLContext, the panics
    it raised)."""
    from fl_server.persistor import PretrainedModelPersistor

    p = PretrainedModelPersistor(**kwargs)
    panics = []
    p.system_panic = lambda reason, fl_ctx: panics.append(reason)
    ctx = fl_ctx(root)
    p._initialize(ctx)
    return p, ctx, panics
