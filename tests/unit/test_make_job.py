"""The job generator (scripts/make_job.py) and the committed job folder it must reproduce."""

import contextlib
import filecmp
import inspect
import json
import os

import pytest

from fl_deploy import make_job

from fl_deploy import APP_CODE, ROOT

COMMITTED_JOB = os.path.join(ROOT, "jobs", "gpt2-fedavg-stream")
# Each app's custom/ holds whole packages of app_code/: the server's and the sites' code never mix.
CUSTOM = {"app_server": {"fl_common", "fl_server"}, "app_site": {"fl_common", "fl_site"}}
SITES3 = ["site-1", "site-2", "site-3"]


def _load(job, *parts):
    with open(os.path.join(job, *parts)) as f:
        return json.load(f)


def _server(job):
    return _load(job, "app_server", "config", "config_fed_server.json")


def _client(job):
    return _load(job, "app_site", "config", "config_fed_client.json")


def _component_paths(cfg):
    return [c["path"] for c in cfg.get("components", [])]


def _fedavg_default(name):
    """A FedAvg argument's default: the exporter leaves out arguments equal to their default."""
    from fl_server.fedavg import LargeModelFedAvg

    for cls in LargeModelFedAvg.__mro__:
        if "__init__" in cls.__dict__:
            params = inspect.signature(cls.__init__).parameters
            if name in params:
                return params[name].default
    raise AssertionError(f"LargeModelFedAvg has no argument {name!r}")


def _fedavg_arg(server_cfg, name):
    flows = [w for w in server_cfg["workflows"] if w["path"] == "fl_server.fedavg.LargeModelFedAvg"]
    assert len(flows) == 1, server_cfg["workflows"]
    args = flows[0].get("args", {})
    return args[name] if name in args else _fedavg_default(name)


def _task_args(job):
    execs = _client(job)["executors"]
    assert len(execs) == 1
    return execs[0]["executor"]["args"]


@pytest.fixture(scope="module")
def job3(tmp_path_factory):
    out = tmp_path_factory.mktemp("job3") / "job"
    assert make_job.main(["--out", str(out), "--sites", ",".join(SITES3), "--rounds", "4",
                          "--model", "/m", "--dataset", "/d", "--transfer", "tensor"]) == 0
    return str(out)


def test_meta_targets_exactly_the_listed_sites(job3):
    meta = _load(job3, "meta.json")
    assert meta["min_clients"] == 3
    assert meta["deploy_map"] == {"app_server": ["server"], "app_site": SITES3}


def test_server_config(job3):
    server = _server(job3)
    paths = _component_paths(server)
    assert any(p.endswith("TensorServerStreamer") for p in paths), paths
    assert _fedavg_arg(server, "num_rounds") == 4
    assert _fedavg_arg(server, "num_clients") == 3
    persistors = [c for c in server["components"] if c["path"] == "fl_server.persistor.PretrainedModelPersistor"]
    assert len(persistors) == 1, paths
    assert persistors[0]["args"]["model_name_or_path"] == "/m"
    # The workflow must use that persistor.
    assert _fedavg_arg(server, "persistor_id") == persistors[0]["id"]


def test_client_config(job3):
    client = _client(job3)
    paths = _component_paths(client)
    assert any(p.endswith("TensorClientStreamer") for p in paths), paths
    args = _task_args(job3)
    assert args["task_script_path"] == "fl_site/client.py"
    line = args["task_script_args"]
    for piece in ("--sites site-1,site-2,site-3", "--model /m", "--dataset /d"):
        assert piece in line, (piece, line)


def test_task_script_args_parse_as_train_settings(job3):
    from fl_site.training import parse_settings

    s = parse_settings(_task_args(job3)["task_script_args"].split())
    assert (s.model, s.dataset) == ("/m", "/d")
    assert s.site_list() == SITES3
    assert [s.shard_of(site) for site in SITES3] == [(0, 3), (1, 3), (2, 3)]


def test_each_app_holds_exactly_the_app_code_of_its_side(job3):
    """app_server gets fl_server + fl_common, app_site fl_site + fl_common: the sites never receive server code."""
    for app, packages in CUSTOM.items():
        custom = os.path.join(job3, app, "custom")
        assert set(os.listdir(custom)) == packages, app
        for package in packages:
            sources = {f for f in os.listdir(os.path.join(APP_CODE, package)) if f.endswith(".py")}
            assert set(os.listdir(os.path.join(custom, package))) == sources, (app, package)
            for name in sources:
                assert filecmp.cmp(os.path.join(custom, package, name), os.path.join(APP_CODE, package, name),
                                   shallow=False), f"{app}/custom/{package}/{name} differs from app_code/"
    assert os.listdir(os.path.join(job3, "app_server", "config")) == ["config_fed_server.json"]
    assert os.listdir(os.path.join(job3, "app_site", "config")) == ["config_fed_client.json"]


@pytest.mark.parametrize("transfer, offload", [("offload", True), ("memory", False)])
def test_transfers_without_the_tensor_streamers(tmp_path, transfer, offload):
    out = tmp_path / "job"
    assert make_job.main(["--out", str(out), "--sites", "a,b", "--transfer", transfer]) == 0
    server_paths = _component_paths(_server(str(out)))
    client_paths = _component_paths(_client(str(out)))
    assert not any("TensorServerStreamer" in p or "TensorClientStreamer" in p for p in server_paths + client_paths)
    assert _fedavg_arg(_server(str(out)), "enable_tensor_disk_offload") is offload
    # Still a complete FedAvg job.
    assert _fedavg_arg(_server(str(out)), "num_clients") == 2
    assert "fl_server.persistor.PretrainedModelPersistor" in server_paths


def test_default_transfer_is_offload():
    job, _, _ = make_job.parse_args(["--sites", "a"], environ={})
    assert job.transfer == "offload"


def test_train_args_carry_only_what_differs_from_the_defaults(tmp_path):
    """The sites' defaults live in TrainSettings; the job repeats none of them."""
    from fl_site.training import TrainSettings, parse_settings

    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--sites", "a,b"]) == 0
    assert _task_args(out)["task_script_args"] == "--sites a,b"
    assert make_job.main(["--out", out, "--sites", "a,b", "--max_steps", "7", "--lora", "--bf16", "false"]) == 0
    line = _task_args(out)["task_script_args"]
    assert line == "--sites a,b --max_steps 7 --bf16 false --lora true", line
    parsed = parse_settings(line.split())
    assert (parsed.max_steps, parsed.lora, parsed.bf16, parsed.model) == (7, True, False, TrainSettings.model)


def test_fl_environment_variables_set_fields_and_flags_win(tmp_path):
    environ = {"FL_ROUNDS": "5", "FL_MAX_STEPS": "9", "FL_LORA": "1", "FL_TRANSFER": "memory",
               "FL_IMAGE": "not-a-job-setting", "FL_BATCH_SIZE": ""}
    job, train, _ = make_job.parse_args(["--sites", "a", "--rounds", "6"], environ=environ)
    assert (job.rounds, job.transfer, train.max_steps, train.lora, train.batch_size) == (6, "memory", 9, True, 16)


def test_env_example_names_every_job_setting_and_no_other():
    """Each job setting has one home (its dataclass field); .env.example shows each as FL_<FIELD>, generated from
    the fields, and no line there names a job setting that does not exist."""
    import dataclasses
    import re

    fields = {"FL_" + f.name.upper() for cls in make_job.SETTINGS for f in dataclasses.fields(cls)}
    with open(os.path.join(ROOT, ".env.example")) as f:
        text = f.read()
    section = text.split("# --- the job")[1].split("\n# --- ")[0]
    named = set(re.findall(r"^#?\s*(FL_[A-Z0-9_]+)=", section, re.M))
    assert named - fields == set(), f".env.example names job settings no field has: {sorted(named - fields)}"
    assert fields - named == set(), f"job settings missing from .env.example: {sorted(fields - named)}"
    assert make_job.env_example_section() in text, \
        ".env.example's job section is stale: paste `.venv/bin/python scripts/make_job.py --env_example` into it"


def test_the_workflow_is_built_by_its_class_not_grafted():
    """make_job constructs LargeModelFedAvg with every setting in its constructor: its state has one home."""
    from fl_server.fedavg import LargeModelFedAvg

    job, train, _ = make_job.parse_args(["--sites", "a,b", "--round_timeout", "7", "--part_mib", "4",
                                         "--min_sites", "2", "--aggregation", "nvflare"], environ={})
    with contextlib.chdir(make_job.APP_CODE):  # where export() builds it: the task script is relative to app_code/
        recipe = make_job.build_recipe(job, train)
    (flow,) = recipe._job._deploy_map["server"].app_config.workflows  # NVFlare's job model (private)
    controller = flow.controller
    assert type(controller) is LargeModelFedAvg
    assert (controller.round_timeout, controller.part_mib, controller.min_sites, controller.aggregation,
            controller.num_clients) == (7, 4.0, 2, "nvflare", 2)


def test_out_folder_is_replaced(tmp_path):
    out = tmp_path / "job"
    (out / "stale").mkdir(parents=True)
    (out / "stale" / "old.txt").write_text("old")
    assert make_job.main(["--out", str(out), "--sites", "a,b"]) == 0
    assert not (out / "stale").exists()
    assert (out / "meta.json").is_file()


PROJECT_YML = """\
api_version: 3
name: test-project
participants:
  - name: my-server
    type: server
    org: o
    fed_learn_port: 8002
  - name: alpha
    type: client
    org: a
  - name: beta
    type: client
    org: b
  - name: admin@example.org
    type: admin
    org: o
    role: project_admin
"""


def test_sites_default_to_the_project_clients(tmp_path):
    project = tmp_path / "project.yml"
    project.write_text(PROJECT_YML)
    out = tmp_path / "job"
    assert make_job.main(["--out", str(out), "--project", str(project)]) == 0
    meta = _load(str(out), "meta.json")
    assert meta["deploy_map"] == {"app_server": ["server"], "app_site": ["alpha", "beta"]}
    assert meta["min_clients"] == 2
    assert _fedavg_arg(_server(str(out)), "num_clients") == 2
    assert "--sites alpha,beta" in _task_args(str(out))["task_script_args"]


def test_sites_flag_overrides_the_project(tmp_path):
    project = tmp_path / "project.yml"
    project.write_text(PROJECT_YML)
    out = tmp_path / "job"
    assert make_job.main(["--out", str(out), "--project", str(project), "--sites", "gamma"]) == 0
    assert _load(str(out), "meta.json")["deploy_map"] == {"app_server": ["server"], "app_site": ["gamma"]}


def test_missing_project_file_is_an_error(tmp_path, capsys):
    missing = tmp_path / "nope.yml"
    with pytest.raises(SystemExit) as e:
        make_job.main(["--out", str(tmp_path / "job"), "--project", str(missing)])
    assert e.value.code not in (0, None)
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_rounds_below_one_is_an_error(tmp_path, rounds, capsys):
    with pytest.raises(SystemExit) as e:
        make_job.main(["--out", str(tmp_path / "job"), "--sites", "a,b", "--rounds", rounds])
    assert e.value.code not in (0, None)
    assert "--rounds" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_duplicate_sites_are_an_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        make_job.main(["--out", str(tmp_path / "job"), "--sites", "a,b,a"])
    assert e.value.code not in (0, None)


def _tree(root):
    files = set()
    for d, _, names in os.walk(root):
        for n in names:
            files.add(os.path.relpath(os.path.join(d, n), root))
    return files


def test_committed_job_is_the_generators_output(tmp_path):
    hint = "jobs/gpt2-fedavg-stream is stale: run `python scripts/make_job.py` and commit jobs/"
    assert os.path.isdir(COMMITTED_JOB), hint
    out = tmp_path / "job"
    assert make_job.main(["--out", str(out)]) == 0
    committed, generated = _tree(COMMITTED_JOB), _tree(str(out))
    assert committed == generated, (
        f"{hint} (only committed: {sorted(committed - generated)}, only generated: {sorted(generated - committed)})"
    )
    differ = [f for f in sorted(generated)
              if not filecmp.cmp(os.path.join(COMMITTED_JOB, f), os.path.join(str(out), f), shallow=False)]
    assert not differ, f"{hint} (files that differ: {differ})"


def test_round_deadline_and_min_sites(tmp_path):
    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--sites", "site-1,site-2,site-3", "--round_timeout", "90",
                          "--min_sites", "2"]) == 0
    server = _server(out)
    assert _fedavg_arg(server, "round_timeout") == 90 and _fedavg_arg(server, "min_sites") == 2
    for bad in (["--min_sites", "4"], ["--min_sites", "0"], ["--round_timeout", "-1"]):
        with pytest.raises(SystemExit) as e:
            make_job.main(["--out", out, "--sites", "site-1,site-2,site-3", *bad])
        assert e.value.code != 0


def test_resume_settings(tmp_path):
    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--rounds", "5", "--start_round", "2", "--initial_ckpt", "/ck/FL.pt",
                          "--sites", "site-1"]) == 0
    server = _server(out)
    assert _fedavg_arg(server, "start_round") == 2 and _fedavg_arg(server, "num_rounds") == 3
    persistor = [c for c in server["components"] if c["id"] == "persistor"][0]
    assert persistor["args"]["source_ckpt_file_full_name"] == "/ck/FL.pt"
    with pytest.raises(SystemExit):
        make_job.main(["--out", out, "--rounds", "2", "--start_round", "2", "--sites", "site-1"])


@pytest.mark.parametrize("flags, expected", [([], "in-place"), (["--aggregation", "nvflare"], "nvflare")])
def test_aggregation_setting(tmp_path, flags, expected):
    """In place by default; NVFlare's running sum on request."""
    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--sites", "a,b", *flags]) == 0
    assert _fedavg_arg(_server(out), "aggregation") == expected


@pytest.mark.parametrize("flags, expected", [([], "shared"), (["--transfer", "memory"], "shared"),
                                             (["--broadcast", "per-site"], "per-site"),
                                             (["--transfer", "tensor"], "per-site"),
                                             (["--transfer", "tensor", "--broadcast", "shared"], "per-site")])
def test_broadcast_setting(tmp_path, flags, expected):
    """Shared by default for FOBS streaming; the tensor streamers always send per site (they replace the task's
    tensors themselves)."""
    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--sites", "a,b", *flags]) == 0
    assert _fedavg_arg(_server(out), "broadcast_mode") == expected


def test_task_request_interval_and_download_chunk_reach_nvflares_own_keys(tmp_path):
    """The server section's task_request_interval (NVFlare's ServerJsonConfigurator), the workflow's
    task_check_period (NVFlare's BaseModelController argument) and the sites' top-level tensor_download_chunk_size
    (their application config, read by TensorDecomposer), in NVFlare's units."""
    out = str(tmp_path / "job")
    assert make_job.main(["--out", out, "--sites", "site-1,site-2", "--task_request_interval", "0.25",
                          "--task_check_period", "0.05", "--download_chunk_mib", "8"]) == 0
    assert _server(out)["server"]["task_request_interval"] == 0.25
    assert _fedavg_arg(_server(out), "task_check_period") == 0.05
    assert _client(out)["tensor_download_chunk_size"] == 8 * 2**20
    for bad in (["--task_request_interval", "0"], ["--task_check_period", "0"], ["--download_chunk_mib", "0"]):
        with pytest.raises(SystemExit) as e:
            make_job.main(["--out", out, "--sites", "site-1,site-2", *bad])
        assert e.value.code != 0
