"""Generate the FedAvg job folder from app_code/ with NVFlare's recipe API.

    python scripts/make_job.py                       # -> jobs/gpt2-fedavg-stream (sites from project.yml)
    python scripts/make_job.py --rounds 5 --max_steps 100 --out /tmp/myjob
    FL_ROUNDS=5 python scripts/make_job.py           # the same as --rounds 5: FL_<FIELD> for every flag below

Two dataclasses are the job's whole configuration surface, each field declared once with its default and help:
JobSettings (below: rounds, how the weights move, round deadlines, resume) and the sites' TrainSettings
(app_code/fl_site/training.py: model, data, training, exchange format). Flags win over FL_<FIELD> variables of the
environment (scripts/submit_job.py forwards those from .env). The job carries two apps: app_server (config +
the fl_server and fl_common packages) for the server, app_site (config + fl_site and fl_common) for the sites, so
sites never receive server internals; the sites' train_args hold only the TrainSettings that differ from their
defaults. The committed jobs/ folder is this command's output with the defaults; a test keeps them equal.
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, fields

from fl_deploy import APP_CODE, ROOT
from fl_deploy.project import ProjectError, load_project
from fl_server.fedavg import AGGREGATIONS, BROADCASTS
from fl_site.training import TrainSettings, as_flags

JOB_NAME = "gpt2-fedavg-stream"
DEFAULT_JOB_DIR = os.path.join(ROOT, "jobs", JOB_NAME)
SERVER_APP, SITE_APP = "app_server", "app_site"
# What each app's custom/ holds: whole packages of app_code/, by where they run.
APP_PACKAGES = {SERVER_APP: ("fl_common", "fl_server"), SITE_APP: ("fl_common", "fl_site")}
CLIENT_SCRIPT = "fl_site/client.py"  # relative to app_site/custom
ENV_PREFIX = "FL_"
# How the weights move. The default was chosen by benchmarks/exchange.py (docs/benchmarks.md): at 2-4 sites x
# 124M, offload rounds were 2.4x faster than the tensor streamers' and the server peak 1.4-1.6x lower.
TRANSFERS = {
    "offload": "NVFlare's FOBS streaming (download references); the server downloads each result to disk (TMPDIR) "
               "and aggregates it tensor by tensor (enable_tensor_disk_offload)",
    "tensor": "NVFlare's tensor streamers (TensorServerStreamer / TensorClientStreamer), results in memory",
    "memory": "NVFlare's FOBS streaming, results in memory",
}


def _choices(options: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in options.items())


@dataclass
class JobSettings:
    """The job as the server runs it. Every field is a make_job.py flag and an FL_<FIELD> line in .env."""

    rounds: int = field(default=3, metadata={"help": "FedAvg rounds in all, resumed rounds included."})
    transfer: str = field(default="offload", metadata={"choices": list(TRANSFERS),
                                                       "help": "How the weights move: " + _choices(TRANSFERS)})
    broadcast: str = field(default="shared", metadata={
        "choices": list(BROADCASTS),
        "help": "How the server sends the global model with --transfer offload or memory: " + _choices(BROADCASTS)
                + " (the tensor streamers always send per site)."})
    aggregation: str = field(default="in-place", metadata={"choices": list(AGGREGATIONS),
                                                           "help": "How the server averages the results: "
                                                                   + _choices(AGGREGATIONS)})
    round_timeout: int = field(default=3600, metadata={"help": "Seconds a round waits for all sites before "
                                                               "aggregating those that answered (0 = forever)."})
    task_request_interval: float = field(default=0.5, metadata={
        "help": "Seconds a site waits before asking the server for its next task (NVFlare's "
                "server.task_request_interval, 2 by default there): each round pays it once after the sites' results "
                "and again while the server aggregates (docs/benchmarks/exchange-pace.md measured 2 -> 0.5)."})
    task_check_period: float = field(default=0.1, metadata={
        "help": "Seconds between the server's looks at whether the round's task is done (NVFlare's FedAvg "
                "task_check_period, 0.5 there): its task monitor and the workflow's wait each look at this period, "
                "so the round waits up to about two periods after its last result before it aggregates "
                "(docs/benchmarks/exchange-pace.md measured 0.5 -> 0.1)."})
    download_chunk_mib: float = field(default=2.0, metadata={
        "help": "MiB per reply when the server downloads a site's result (NVFlare's tensor_download_chunk_size at "
                "the sites, 2 there): tensors are packed into replies of up to this size, a larger one travels "
                "alone; each reply is one request/reply through the server's relay. 32 cut an 8-site 124M round from "
                "50 to 40 s and raised the server's peak from 2.17 to 2.82 GiB (docs/benchmarks/exchange-pace.md)."})
    min_sites: int = field(default=1, metadata={"help": "Fewest site results a round may aggregate after the "
                                                        "timeout; fewer stops the job."})
    initial_ckpt: str = field(default="", metadata={"help": "Server-side path of a persisted FL_global_model.pt to "
                                                            "start from (resume)."})
    start_round: int = field(default=0, metadata={"help": "First round to run (resume): the job runs rounds "
                                                          "start_round..rounds-1."})
    tensor_send_timeout: float = field(default=300.0, metadata={"help": "Seconds per streamed transfer "
                                                                        "(--transfer tensor)."})
    server_memory_gc_rounds: int = field(default=0, metadata={"help": "Server: gc + malloc_trim every N rounds "
                                                                      "(0 = never)."})
    k8s_image: str = field(default="", metadata={"help": "Kubernetes only (docs/kubernetes.md): the image each "
                                                        "site's job pod runs (meta.json launcher_spec); Compose "
                                                        "runs jobs in the site's own container and ignores it."})
    k8s_gpus: int = field(default=0, metadata={"help": "Kubernetes only: GPUs (nvidia.com/gpu) each site's job pod "
                                                       "requests (meta.json launcher_spec); Compose gives GPUs to site "
                                                       "containers (FL_GPUS_<SITE> in .env)."})

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        if not 0 <= self.start_round < self.rounds:
            raise ValueError(f"--start_round must be in 0..{self.rounds - 1} (--rounds is the total, resumed "
                             "rounds included)")
        if self.round_timeout < 0:
            raise ValueError("--round_timeout must be >= 0")
        if self.task_request_interval <= 0:
            raise ValueError("--task_request_interval must be > 0 seconds")
        if self.task_check_period <= 0:
            raise ValueError("--task_check_period must be > 0 seconds")
        if self.download_chunk_mib <= 0:
            raise ValueError("--download_chunk_mib must be > 0")
        if self.server_memory_gc_rounds < 0:
            raise ValueError("--server_memory_gc_rounds must be >= 0")
        if self.k8s_gpus < 0:
            raise ValueError("--k8s_gpus must be >= 0")

    @property
    def effective_broadcast(self) -> str:
        """--broadcast applies to FOBS streaming only: the tensor streamers replace the task's tensors themselves."""
        return "per-site" if self.transfer == "tensor" else self.broadcast


@dataclass
class Output:
    """Where the job goes and where its sites come from (not job settings: no FL_<FIELD> for these)."""

    out: str = field(default=DEFAULT_JOB_DIR, metadata={"help": "Job folder to write (replaced if it exists)."})
    project: str = field(default=os.path.join(ROOT, "project.yml"),
                         metadata={"help": "NVFlare project file: --sites defaults to its clients."})
    env_example: bool = field(default=False, metadata={"help": "Print the job section of .env.example (every "
                                                               "setting with its help and default) and exit."})


SETTINGS = (JobSettings, TrainSettings)


def env_flags(environ) -> list:
    """Flags for every JobSettings / TrainSettings field set as FL_<FIELD> (non-empty) in ``environ``."""
    values = {}
    for cls in SETTINGS:
        for f in fields(cls):
            value = environ.get(ENV_PREFIX + f.name.upper(), "")
            if value.strip():
                values[f.name] = value.strip()
    return as_flags(values)


def env_example_section() -> str:
    """The job section of .env.example, generated from the dataclasses: one commented FL_<FIELD> line each."""
    import textwrap

    lines = [
        "# --- the job: scripts/submit_job.py passes every FL_<FIELD> of .env to scripts/make_job.py ---------------",
        "# Generated from JobSettings (fl_deploy/make_job.py) and TrainSettings (app_code/fl_site/training.py) by",
        "# `.venv/bin/python scripts/make_job.py --env_example`. Uncomment a line to change that setting;",
        "# sites come from project.yml.",
    ]
    for cls in SETTINGS:
        for f in fields(cls):
            default = "" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) \
                else str(f.default)
            text = f.metadata.get("help", "")
            lines += textwrap.wrap(text, 114, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False)
            lines.append(f"#{ENV_PREFIX}{f.name.upper()}={default}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None, environ=None) -> tuple:
    """(JobSettings, TrainSettings with its sites filled in, Output) from FL_<FIELD> variables, then flags."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser((*SETTINGS, Output), prog="make_job.py", description=__doc__)
    parser.formatter_class = __import__("argparse").RawDescriptionHelpFormatter
    try:
        job, train, output = parser.parse_args_into_dataclasses(
            args=env_flags(os.environ if environ is None else environ) + argv)
    except ValueError as e:  # a __post_init__ check, or flags no dataclass has
        parser.error(str(e))
    if output.env_example:
        print(env_example_section(), end="")
        raise SystemExit(0)
    output.out = os.path.abspath(output.out)
    if not train.sites:
        try:
            train.sites = ",".join(load_project(output.project).sites)
        except ProjectError as e:
            parser.error(f"{e}; pass --sites site-1,site-2 or point --project at a valid project file")
    sites = train.site_list()
    if len(set(sites)) != len(sites):
        parser.error(f"duplicate site names in --sites {train.sites}")
    if not 1 <= job.min_sites <= len(sites):
        parser.error(f"--min_sites must be in 1..{len(sites)} (the number of sites)")
    return job, train, output


def train_args(train: TrainSettings) -> str:
    """The sites' task_script_args: the TrainSettings that differ from their defaults."""
    return " ".join(as_flags(train.changed()))


def build_recipe(job: JobSettings, train: TrainSettings):
    """NVFlare's FedAvgRecipe with LargeModelFedAvg as the server workflow and the pretrained-model persistor."""
    from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
    from nvflare.client.config import ExchangeFormat
    from nvflare.recipe import add_experiment_tracking

    from fl_server.fedavg import LargeModelFedAvg
    from fl_server.persistor import PretrainedModelPersistor

    class LargeModelFedAvgRecipe(FedAvgRecipe):
        def _create_controller(self, persistor_id, model_params, model_aggregator):
            # FedAvgRecipe's extension point: the same FedAvg arguments the recipe passes, our class, and its own.
            return LargeModelFedAvg(
                num_clients=self.min_clients, num_rounds=self.num_rounds, persistor_id=persistor_id,
                model=model_params, save_filename=self.save_filename, aggregator=model_aggregator,
                stop_cond=self.stop_cond, patience=self.patience, task_name="train", exclude_vars=self.exclude_vars,
                aggregation_weights=self.aggregation_weights, memory_gc_rounds=self.server_memory_gc_rounds,
                enable_tensor_disk_offload=self.enable_tensor_disk_offload, **self._get_controller_kwargs(),
                start_round=job.start_round, round_timeout=job.round_timeout, min_sites=job.min_sites,
                exchange_dtype=train.exchange_dtype, broadcast_mode=job.effective_broadcast,
                part_mib=train.part_mib, aggregation=job.aggregation, task_check_period=job.task_check_period,
            )

    recipe = LargeModelFedAvgRecipe(
        name=JOB_NAME,
        # Streaming waits for every participant to fetch the task: fewer than all sites would time out.
        min_clients=len(train.site_list()),
        # FedAvg runs rounds start_round .. start_round + num_rounds - 1.
        num_rounds=job.rounds - job.start_round,
        model_persistor=PretrainedModelPersistor(
            model_name_or_path=train.model, source_ckpt_file_full_name=job.initial_ckpt or None,
            lora=train.lora_kwargs(),
        ),
        server_expected_format=ExchangeFormat.PYTORCH,
        # Relative to APP_CODE (the export runs there): the job refers to custom/fl_site/client.py.
        train_script=CLIENT_SCRIPT,
        train_args=train_args(train),
        key_metric="global_eval_loss",
        key_metric_mode="min",
        enable_tensor_disk_offload=job.transfer == "offload",
        server_memory_gc_rounds=job.server_memory_gc_rounds,
    )
    # config_fed_server.json's "server" section, read by NVFlare's ServerJsonConfigurator for this job only.
    recipe.add_server_config({"server": {"task_request_interval": job.task_request_interval}})
    # config_fed_client.json's top level: the sites' application config, where NVFlare's TensorDecomposer reads it.
    recipe.add_client_config({"tensor_download_chunk_size": int(job.download_chunk_mib * 2**20)})
    add_experiment_tracking(recipe, tracking_type="tensorboard")
    if job.transfer == "tensor":
        recipe.enable_tensor_streaming(tensor_send_timeout=job.tensor_send_timeout)
    return recipe


def launcher_spec(job: JobSettings) -> dict:
    """meta.json's launcher_spec for NVFlare's Kubernetes job launcher (nvflare/utils/job_launcher_utils.py
    get_job_launcher_spec: "default" applies to every site); {} when neither k8s setting is given."""
    k8s = {k: v for k, v in (("image", job.k8s_image), ("num_of_gpus", job.k8s_gpus)) if v}
    return {"default": {"k8s": k8s}} if k8s else {}


def split_apps(exported: str, dest: str, sites: list, launcher: dict = None):
    """NVFlare's one-app export -> app_server (server config + server packages) and app_site (client config + site
    packages) in ``dest``, each custom/ holding whole packages of app_code/; meta.json deploys each to its side."""
    src_app = os.path.join(exported, "app")
    os.makedirs(dest)
    for app, config in ((SERVER_APP, "config_fed_server.json"), (SITE_APP, "config_fed_client.json")):
        os.makedirs(os.path.join(dest, app, "config"))
        shutil.copy2(os.path.join(src_app, "config", config), os.path.join(dest, app, "config", config))
        for package in APP_PACKAGES[app]:
            shutil.copytree(os.path.join(APP_CODE, package), os.path.join(dest, app, "custom", package),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with open(os.path.join(exported, "meta.json")) as f:
        meta = json.load(f)
    # Deploy to the named sites only: a site outside the list has no shard and must not be handed the job.
    meta["deploy_map"] = {SERVER_APP: ["server"], SITE_APP: list(sites)}
    if launcher:
        meta["launcher_spec"] = launcher
    with open(os.path.join(dest, "meta.json"), "w") as f:
        json.dump(meta, f, indent=4)


def export(job: JobSettings, train: TrainSettings, out: str) -> str:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(APP_CODE)
        try:
            build_recipe(job, train).export(tmp)
        finally:
            os.chdir(cwd)
        staged = os.path.join(tmp, "staged")
        split_apps(os.path.join(tmp, JOB_NAME), staged, train.site_list(), launcher_spec(job))
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    return out


def main(argv=None) -> int:
    job, train, output = parse_args(argv)
    out = export(job, train, output.out)
    resume = f" from round {job.start_round + 1}" if job.start_round else ""
    print(f"job folder: {out} (sites: {', '.join(train.site_list())}; rounds: {job.rounds}{resume}; transfer: {job.transfer}, "
          f"broadcast {job.effective_broadcast}; exchange: {'LoRA adapter' if train.lora else 'full model'}, "
          f"{train.exchange_dtype}; train_args: {train_args(train) or 'defaults'})")
    return 0
