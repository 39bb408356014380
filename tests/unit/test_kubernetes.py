"""The Kubernetes path (docs/kubernetes.md), as far as a machine without a cluster can check it: NVFlare's own
`nvflare deploy prepare` with the documented config (docker/k8s.yaml) on this project's provisioned kits, and
`nvflare deploy k8s stage` with kubectl replaced by a recorder. What it wrote must run our image the way the image
is built (docker/Dockerfile): its venv's Python, its workspace and user; the kits themselves stay untouched. Nothing
is applied to a cluster here: no helm install, no pod, no job."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from fl_deploy import IMAGE_UID, ROOT

NVFLARE = os.path.join(os.path.dirname(sys.executable), "nvflare")
CONFIG = os.path.join(ROOT, "docker", "k8s.yaml")


def dockerfile() -> dict:
    """The facts of docker/Dockerfile the cluster depends on: the venv's Python, the workspace, the user."""
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        text = f.read()
    venv = re.search(r"python3 -m venv (\S+);", text).group(1)
    assert f"COPY --from=build {venv} {venv}" in text and f"PATH={venv}/bin:" in text
    return {"python": f"{venv}/bin/python3", "workspace": re.search(r"NVFL_WORKSPACE=(\S+)", text).group(1),
            "uid": int(re.search(r"ARG FL_UID=(\d+)", text).group(1))}


def tree_digest(folder: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """project.yml's kits, provisioned as scripts/provision.py does, then prepared for Kubernetes."""
    from fl_deploy.project import load_project
    from fl_deploy.provision import provision

    tmp = tmp_path_factory.mktemp("k8s")
    shutil.copy(os.path.join(ROOT, "project.yml"), tmp / "project.yml")
    project = load_project(str(tmp / "project.yml"))
    kits = provision(project, str(tmp / "ws"), str(tmp / "store"), force=False, service_uid=0)
    before = {name: tree_digest(kit) for name, kit in kits.items()}
    out = {}
    for name in [project.server, *project.sites]:
        dest = tmp / "k8s" / name
        run = subprocess.run([NVFLARE, "deploy", "prepare", kits[name], "--output", str(dest), "--config", CONFIG],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        out[name] = str(dest)
    return {"project": project, "kits": kits, "before": before, "out": out, "tmp": tmp}


def values(prepared, name) -> dict:
    with open(os.path.join(prepared["out"][name], "helm_chart", "values.yaml")) as f:
        return yaml.safe_load(f)


def resources(prepared, name) -> dict:
    with open(os.path.join(prepared["out"][name], "local", "resources.json.default")) as f:
        return {c["id"]: c for c in json.load(f)["components"]}


def test_prepare_leaves_the_kits_as_provisioned(prepared):
    assert {name: tree_digest(kit) for name, kit in prepared["kits"].items()} == prepared["before"]


def test_parent_pods_run_our_image_with_its_venv_workspace_and_user(prepared):
    with open(CONFIG) as f:
        config = yaml.safe_load(f)
    image = dockerfile()
    repository, tag = config["parent"]["docker_image"].rsplit(":", 1)
    assert image["uid"] == IMAGE_UID
    for name in prepared["out"]:
        v = values(prepared, name)
        assert (v["image"]["repository"], v["image"]["tag"]) == (repository, tag)
        # NVFlare's default parent Python (/usr/local/bin/python3) is the base image's, without our packages.
        assert v["command"] == [image["python"]]
        assert v["persistence"]["workspace"]["mountPath"] == image["workspace"]
        assert v["args"][v["args"].index("-m", 2) + 1] == image["workspace"]
        assert v["securityContext"]["runAsUser"] == image["uid"] and v["securityContext"]["runAsNonRoot"] is True
        launcher = resources(prepared, name)["k8s_launcher"]["args"]
        assert launcher["default_python_path"] == image["python"]  # what every job pod runs
        assert launcher["workspace_mount_path"] == image["workspace"]
        assert launcher["security_context"]["runAsUser"] == image["uid"]
        assert launcher["namespace"] == config["namespace"]


def test_sites_dial_the_server_service_by_its_certificate_name(prepared):
    project = prepared["project"]
    server = values(prepared, project.server)
    assert server["serviceName"] == project.server and server["fedLearnPort"] == project.port
    for site in project.sites:
        with open(os.path.join(prepared["out"][site], "startup", "fed_client.json")) as f:
            target = json.load(f)["servers"][0]["service"]["target"]
        assert target.split(":")[0] == project.server, target
        assert resources(prepared, site)["k8s_launcher"]["path"].endswith("ClientK8sJobLauncher")


def test_live_site_logs_survive_prepare(prepared):
    """The provisioning that streams site logs (LiveJobLogs) is still in the prepared kits; the server's receiver
    resolves {$NVFL_WORKSPACE}, which the image sets to the workspace the chart mounts."""
    for site in prepared["project"].sites:
        assert resources(prepared, site)["site_job_log_streamer"]["args"] == {"log_file_name": "log.txt"}
    assert resources(prepared, prepared["project"].server)["log_receiver"]["args"] == {"dest_dir": "{$NVFL_WORKSPACE}"}


def test_job_pods_get_our_image_and_gpus_from_the_job(tmp_path):
    """make_job.py --k8s_image / --k8s_gpus write meta.json's launcher_spec; NVFlare's own resolver reads the
    image and the nvidia.com/gpu count every site's job pod gets from it."""
    from nvflare.utils.job_launcher_utils import get_job_launcher_spec

    from fl_deploy import make_job

    out = tmp_path / "job"
    assert make_job.main(["--out", str(out), "--sites", "site-1,site-2", "--k8s_image",
                          "registry.example.org/gpt2-fl:2.9.0", "--k8s_gpus", "1"]) == 0
    with open(out / "meta.json") as f:
        meta = json.load(f)
    for site in ("site-1", "site-2"):
        assert get_job_launcher_spec(meta, site, "k8s") == {"image": "registry.example.org/gpt2-fl:2.9.0",
                                                             "num_of_gpus": 1}
    assert "launcher_spec" not in json.load(open(os.path.join(ROOT, "jobs", "gpt2-fedavg-stream", "meta.json")))


def test_stage_holds_the_private_key_in_a_secret_and_local_config_in_a_configmap(prepared, tmp_path):
    """`nvflare deploy k8s stage` with a kubectl that records what it would apply."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "applied.yaml"
    (bin_dir / "kubectl").write_text(f"#!/bin/sh\necho --- >> {record}\ncat >> {record}\n")
    (bin_dir / "kubectl").chmod(0o755)
    site = prepared["project"].sites[0]
    kit = os.path.join(prepared["tmp"], "stage", site)
    shutil.copytree(prepared["out"][site], kit)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("KUBECTL", None)
    run = subprocess.run([NVFLARE, "deploy", "k8s", "stage", kit, "--namespace", "nvflare"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    manifests = {m["kind"]: m for m in yaml.safe_load_all(record.read_text()) if m}
    secret, configmap = manifests["Secret"], manifests["ConfigMap"]
    with open(os.path.join(kit, "startup", "client.key"), "rb") as f:
        key = f.read()
    assert key in [base64.b64decode(v) for v in secret["data"].values()]  # the kit's private key: in the Secret
    assert all(key != base64.b64decode(v) for v in configmap["binaryData"].values())  # and not in the ConfigMap
    with open(os.path.join(kit, "helm_chart", "values.yaml")) as f:
        staged = yaml.safe_load(f)["workspaceConfig"]
    assert staged["startup"]["secretName"] == secret["metadata"]["name"]
    assert staged["local"]["configMapName"] == configmap["metadata"]["name"]
    assert {i["path"] for i in staged["startup"]["items"]} >= {"client.key", "client.crt", "rootCA.pem"}
