"""The host side of the compose deployment: .env settings, `docker compose` calls, the admin console, Docker checks.

Standard library only: submit_job.py and check_host.py run on a host that has Docker and python3 and nothing else.
Every failure is a HostError whose text says what to do."""

import json
import os
import shutil
import subprocess

from fl_deploy import ROOT

ADMIN_SERVICE = "admin"
ADMIN_KIT = "/home/fl/admin-kit"  # docker/entrypoint.sh copies the read-only kit here


class HostError(RuntimeError):
    pass


def read_env_file(path: str) -> dict:
    """KEY=VALUE lines of a compose .env file (no shell expansion, as compose reads it)."""
    values = {}
    if not os.path.isfile(path):
        return values
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def setting(name: str, default: str, env_file: str = None) -> str:
    """A deployment setting: the process environment wins, then .env, then the default."""
    if name in os.environ:
        return os.environ[name]
    return read_env_file(env_file or os.path.join(ROOT, ".env")).get(name, default)


def env_settings(prefix: str, env_file: str = None) -> dict:
    """Every variable named prefix* in .env, then in the process environment (which wins)."""
    values = {k: v for k, v in read_env_file(env_file or os.path.join(ROOT, ".env")).items() if k.startswith(prefix)}
    values.update({k: v for k, v in os.environ.items() if k.startswith(prefix)})
    return values


def check_docker():
    if not shutil.which("docker"):
        raise HostError("docker is not installed: install Docker Engine (https://docs.docker.com/engine/install/)")
    info = subprocess.run(["docker", "info", "--format", "{{json .ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        raise HostError(
            "the Docker daemon is not running or not reachable: start it (sudo systemctl start docker) "
            "or add your user to the 'docker' group"
        )
    v = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if v.returncode != 0:
        hint = " (only the old docker-compose v1 is installed)" if shutil.which("docker-compose") else ""
        raise HostError(f"Docker Compose v2 is missing{hint}: install the docker-compose-plugin package")
    major = v.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 2:
        raise HostError(f"Docker Compose {v.stdout.strip()} is too old: this project needs Compose v2")


def compose(*args, check=True, capture=True, input=None, env_file=None) -> subprocess.CompletedProcess:
    cmd = ["docker", "compose", "--project-directory", ROOT]
    if env_file:
        cmd += ["--env-file", env_file]
    cmd += list(args)
    run = subprocess.run(cmd, capture_output=capture, text=input is None or isinstance(input, str), input=input)
    if check and run.returncode != 0:
        err = (run.stderr or "").strip() if capture else ""
        raise HostError(f"`docker compose {' '.join(args)}` failed: {err[-500:]}")
    return run


def running_services(env_file=None) -> set:
    run = compose("ps", "--status", "running", "--format", "json", env_file=env_file)
    text = run.stdout.strip()
    if not text:
        return set()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    return {r["Service"] for r in rows}


def require_admin(env_file=None, service=ADMIN_SERVICE):
    running = running_services(env_file)
    if service not in running:
        admins = sorted(s for s in running if s == ADMIN_SERVICE or s.startswith(ADMIN_SERVICE + "-"))
        hint = f" (running admin consoles: {', '.join(admins)})" if admins else ""
        raise HostError(
            f"the admin container '{service}' is not running{hint}: start the federation first "
            "(docker compose up -d), after provisioning the kits (python scripts/provision.py)"
        )


def admin_nvflare(*args, env_file=None, check=True, service=ADMIN_SERVICE) -> dict:
    """Run an nvflare CLI command in an admin container (project.yml's first admin by default); return its JSON
    envelope."""
    run = compose(
        "exec", "-T", service, "nvflare", "--format", "json", *args, "--startup-kit", ADMIN_KIT,
        check=False, env_file=env_file,
    )
    try:
        envelope = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise HostError(f"nvflare {' '.join(args)} gave no answer: {(run.stderr or run.stdout).strip()[-500:]}")
    if check and envelope.get("status") != "ok":
        raise HostError(f"nvflare {' '.join(args)}: {envelope.get('message')} {envelope.get('hint') or ''}".strip())
    return envelope
