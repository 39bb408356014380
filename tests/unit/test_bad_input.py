"""Bad input to the deployment scripts: one clear sentence, exit 2, and nothing already there is touched."""

import os
import socket
import stat
import subprocess
import sys

import pytest

from fl_deploy.harness import local_federation

SCRIPTS = os.path.join(local_federation.ROOT, "scripts")


def run_script(name, *args, env=None, cwd=None):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


def assert_one_line_error(run, *words):
    assert run.returncode == 2, (run.stdout, run.stderr)
    err = run.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("text, words", [
    ("participants: [\n  - name: x\n", ["not valid YAML"]),
    ("name: p\nparticipants: []\n", ["exactly one server"]),
    ("name: p\nparticipants:\n  - {name: s, type: server, org: o}\n", ["no sites"]),
    ("name: p\nparticipants:\n  - {name: s, type: server, org: o}\n  - {name: Site_1, type: client, org: o}\n",
     ["'Site_1'", "DNS label"]),
    ("name: p\nparticipants:\n  - {name: s, type: server, org: o}\n  - {name: a, type: client, org: o}\n"
     "  - {name: a, type: client, org: o}\n", ["duplicate"]),
])
def test_provision_rejects_bad_project(tmp_path, text, words):
    project = tmp_path / "project.yml"
    project.write_text(text)
    run = run_script("provision.py", "--project", str(project), "--workspace", str(tmp_path / "ws"),
                     "--compose-dir", "")
    assert_one_line_error(run, *words)
    assert not (tmp_path / "ws" / "kits").exists()


def test_provision_keeps_existing_kits_without_force(tmp_path):
    project = tmp_path / "project.yml"
    local_federation.write_project(str(project), 18002, ["site-1"])
    args = ["--project", str(project), "--workspace", str(tmp_path / "ws"), "--compose-dir", "", "--service-uid", "0"]
    assert run_script("provision.py", *args).returncode == 0
    key = tmp_path / "ws" / "kits" / "site-1" / "startup" / "client.key"
    before = key.read_bytes()
    assert_one_line_error(run_script("provision.py", *args), "already exist", "--force")
    assert key.read_bytes() == before


def fake_docker(tmp_path, info_rc=0, compose_rc=0, runtimes='{"runc":{}}', compose_v1=False):
    """A stand-in `docker` on PATH that answers like a broken or partial installation."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "docker"
    script.write_text(f"""#!/bin/sh
case "$1 $2" in
  "info --format") case "$3" in *Runtimes*) echo '{runtimes}';; *) echo '"28.0.0"';; esac; exit {info_rc};;
  "compose version") echo "v2.40.3"; exit {compose_rc};;
  "compose ps") exit 0;;
esac
exit 0
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    if compose_v1:
        (bin_dir / "docker-compose").write_text("#!/bin/sh\n")
        (bin_dir / "docker-compose").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.parametrize("kwargs, args, words", [
    ({"info_rc": 1}, ["--cpu"], ["daemon is not running"]),
    ({"compose_rc": 1, "compose_v1": True}, ["--cpu"], ["Compose v2 is missing", "v1"]),
    ({}, [], ["NVIDIA GPU", "run on CPU with --cpu"]),  # none here; on a GPU host: Docker cannot pass it
])
def test_check_host_explains_what_is_missing(tmp_path, kwargs, args, words):
    assert_one_line_error(run_script("check_host.py", *args, env=fake_docker(tmp_path, **kwargs)), *words)


def test_check_host_without_docker(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no docker anywhere
    assert_one_line_error(run_script("check_host.py", "--cpu", env=env), "docker is not installed")


def test_check_host_port_in_use(tmp_path, monkeypatch):
    from fl_deploy import check_host
    from fl_deploy.host import HostError

    monkeypatch.setattr(check_host, "running_services", lambda: set())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(HostError, match=f"port {s.getsockname()[1]} .* in use"):
            check_host.check_port("127.0.0.1", s.getsockname()[1])


def test_check_host_kits_missing(tmp_path, monkeypatch):
    from fl_deploy import check_host
    from fl_deploy.host import HostError

    monkeypatch.setattr(check_host, "ROOT", str(tmp_path))
    kit = tmp_path / "workspace" / "kits" / "site-1"
    model = {"services": {"site-1": {"volumes": [{"type": "bind", "source": str(kit), "target": "/kit"},
                                                 {"type": "volume", "source": "ws", "target": "/workspace"}]}}}
    with pytest.raises(HostError, match="no startup kit in workspace/kits/site-1: provision first"):
        check_host.check_kits(model)
    (kit / "startup").mkdir(parents=True)
    check_host.check_kits(model)


def test_check_host_assets_the_containers_cannot_read(tmp_path, monkeypatch):
    from fl_deploy import check_host
    from fl_deploy.host import HostError

    monkeypatch.setattr(check_host, "ROOT", str(tmp_path))
    model = tmp_path / "assets" / "my-gpt2"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    weights = model / "model.safetensors"
    weights.write_bytes(b"x")
    weights.chmod(0o600)  # what save_pretrained can leave
    other_uid = os.stat(weights).st_uid + 12345
    with pytest.raises(HostError, match=r"uid \d+\) cannot read assets/my-gpt2/model.safetensors \(mode 0600.*"
                                        r"chmod -R a\+rX assets"):
        check_host.check_assets(other_uid)
    check_host.check_assets(os.stat(weights).st_uid)  # its owner may
    weights.chmod(0o644)
    check_host.check_assets(other_uid)


def test_submit_rejects_a_folder_that_is_not_a_job(tmp_path):
    run = run_script("submit_job.py", "--job-folder", str(tmp_path))
    assert run.returncode == 2 and "not a complete job folder" in run.stderr and "meta.json is missing" in run.stderr


JOB = os.path.join(local_federation.ROOT, "jobs", "gpt2-fedavg-stream")


def check_job_cli(*args):
    """python3 -m fl_deploy.check_job, as submit_job.py runs it in the admin container."""
    return subprocess.run([sys.executable, "-m", "fl_deploy.check_job", *args], capture_output=True, text=True)


@pytest.mark.parametrize("remove, words", [
    # The venv and the admin container have app_code/ on their import path: a module missing from the job must
    # still be reported, not found there.
    ("app_site/custom/fl_site/data.py", ["app_site/custom/fl_site/site_data.py imports 'fl_site.data'",
                                         "neither in app_site/custom nor installed"]),
    ("app_site/custom/fl_common/model.py", ["app_site/custom/fl_site/client.py imports 'fl_common.model'"]),
    ("app_server/custom/fl_server/persistor.py", ["uses fl_server.persistor.PretrainedModelPersistor",
                                                  "app_server/custom/fl_server/persistor.py is missing"]),
    ("app_site/custom/fl_site/client.py", ["runs 'fl_site/client.py'", "app_site/custom/fl_site/client.py is missing"]),
    ("app_site/config/config_fed_client.json", ["config_fed_client.json is missing"]),
])
def test_check_job_names_the_missing_file(tmp_path, remove, words):
    import shutil

    job = tmp_path / "job"
    shutil.copytree(JOB, job)
    before = sorted(str(p.relative_to(job)) for p in job.rglob("*"))
    os.remove(job / remove)
    run = check_job_cli(str(job), "--imports")
    assert run.returncode == 2, run.stdout
    for w in words:
        assert w in run.stderr, run.stderr
    assert "fix: regenerate the job" in run.stderr
    assert sorted(str(p.relative_to(job)) for p in job.rglob("*")) == [p for p in before if p != remove]


def test_check_job_passes_the_committed_job():
    run = check_job_cli(JOB, "--imports")
    assert run.returncode == 0 and "complete (sites: site-1, site-2)" in run.stdout, run.stderr


def test_submit_refuses_a_job_whose_sites_are_not_connected(monkeypatch):
    import time

    from fl_deploy import host
    from fl_deploy.host import AdminConsole, HostError
    from fl_deploy.submit_job import preflight

    now = time.time()
    # site-2 stopped 2 minutes ago: the server still lists it (for 10 minutes) but has not heard from it since.
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: {"status": "ok", "data": {"jobs": [], "clients": [
        {"client_name": "site-1", "client_last_conn_time": now - 5},
        {"client_name": "site-2", "client_last_conn_time": now - 120}]}})
    with pytest.raises(HostError) as e:
        preflight.require_sites({"sites": ["site-1", "site-2", "site-3"]}, AdminConsole())
    assert "site-2, site-3 are not connected" in str(e.value), str(e.value)
    assert "docker compose up -d site-2 site-3" in str(e.value) and "nothing was submitted" in str(e.value)
    preflight.require_sites({"sites": ["site-1"]}, AdminConsole())  # the live site alone: accepted


def test_site_silence_is_measured_at_the_servers_answer_not_after_the_job_is_generated(monkeypatch):
    """submit_job fetches the status while the job is generated, which takes a minute on a loaded host: a site that
    had heartbeated 5 s before the answer is connected, however long the generation took after it."""
    import time

    from fl_deploy import host
    from fl_deploy.host import AdminConsole
    from fl_deploy.submit_job import preflight

    answered = time.time()
    monkeypatch.setattr(host, "admin_nvflare", lambda *a, **k: {"status": "ok", "data": {"jobs": [], "clients": [
        {"client_name": "site-1", "client_last_conn_time": answered - 5}]}})
    status = preflight.site_status(AdminConsole())
    monkeypatch.setattr(preflight.time, "time", lambda: answered + 120)  # generating the job took two minutes
    assert preflight.require_sites({"sites": ["site-1"]}, AdminConsole(), status) == ["site-1"]


def test_job_errors_keeps_the_cause_of_a_traceback():
    from fl_deploy.admin import job_errors

    log = ("2026-11-27 21:53:00,541 - TaskScriptRunner - ERROR - Traceback (most recent call last):\n"
           '  File "client.py", line 3, in main\n'
           "data.DataError: dataset path '/data/imdb' does not exist\n"
           "2026-11-27 21:53:01,000 - ServerRunner - ERROR - [identity=x, run=y] - Aborting current RUN\n"
           "2026-11-27 21:53:02,000 - Cell - INFO - all fine\n")
    assert job_errors.summarize(log) == ["data.DataError: dataset path '/data/imdb' does not exist",
                                         "Aborting current RUN"]


def test_check_host_site_data_folders_named_in_env(tmp_path, monkeypatch):
    """FL_SITE_DATA_<SITE> of .env (--data_source site): a path that is no folder, or one the containers' user cannot
    read, stops check_host.py naming the variable and the fix; a readable folder passes."""
    from fl_deploy import check_host
    from fl_deploy.host import HostError

    monkeypatch.setattr(check_host, "ROOT", str(tmp_path))
    data = tmp_path / "site-1-data"
    monkeypatch.setenv("FL_SITE_DATA_SITE_1", str(tmp_path / "typo"))
    with pytest.raises(HostError, match=r"^FL_SITE_DATA_SITE_1=\S+typo is not a folder on this host: .*fix the path"):
        check_host.check_site_data(1000)
    data.mkdir()
    (data / "train.csv").write_text("text\nok\n")
    (data / "train.csv").chmod(0o600)
    monkeypatch.setenv("FL_SITE_DATA_SITE_1", str(data))
    other_uid = os.stat(data / "train.csv").st_uid + 12345
    with pytest.raises(HostError, match=r"cannot read site-1-data/train.csv \(mode 0600.*FL_SITE_DATA_SITE_1's site "
                                        r"could not read its own data; run chmod -R a\+rX site-1-data"):
        check_host.check_site_data(other_uid)
    (data / "train.csv").chmod(0o644)
    check_host.check_site_data(other_uid)


def test_the_containers_uid_is_fl_uid_of_env_else_the_images(tmp_path, monkeypatch):
    """provision, add_site and renew_kit chown kits (run as root) to the uid the containers run as: FL_UID of the
    environment or .env (what demo.sh records), else the image's; check_host reads the same."""
    from fl_deploy import IMAGE_UID
    from fl_deploy.host import container_uid

    env = tmp_path / ".env"
    monkeypatch.delenv("FL_UID", raising=False)
    assert container_uid(str(env)) == IMAGE_UID
    env.write_text("FL_UID=1234\n")
    assert container_uid(str(env)) == 1234
    monkeypatch.setenv("FL_UID", "2345")
    assert container_uid(str(env)) == 2345
