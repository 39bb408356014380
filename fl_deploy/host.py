"""The host side of the compose deployment: .env settings, `docker compose` calls, the admin console, Docker checks.

Standard library only: submit_job.py and check_host.py run on a host that has Docker and python3 and nothing else.
Every failure is a HostError whose text says what to do."""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from fl_deploy import IMAGE_UID, ROOT

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


def container_uid(env_file: str = None) -> int:
    """The uid the containers run as: FL_UID of the environment or .env (demo.sh records yours), else the image's."""
    return int(setting("FL_UID", "", env_file) or IMAGE_UID)


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


def compose_command(*args, env_file=None) -> list:
    """The argv of `docker compose ARGS` for this project (and its .env)."""
    return ["docker", "compose", "--project-directory", ROOT, *(["--env-file", env_file] if env_file else []), *args]


def compose(*args, check=True, capture=True, input=None, env_file=None) -> subprocess.CompletedProcess:
    cmd = compose_command(*args, env_file=env_file)
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


@dataclass(frozen=True)
class AdminConsole:
    """One admin console of the deployment, as the host reaches it: its compose service (``admin`` is project.yml's
    first admin, ``admin-2`` the second, ...), the .env file compose runs under (None: ./.env) and the admin's
    startup kit inside that container. Every call the host makes to the console goes through one of these."""

    service: str = ADMIN_SERVICE
    env_file: str = None
    kit: str = ADMIN_KIT

    def nvflare(self, *args, check=True) -> dict:
        """``nvflare --format json ARGS --startup-kit KIT`` in the console; its JSON envelope."""
        return admin_nvflare(*args, env_file=self.env_file, check=check, service=self.service)

    def compose(self, *args, **kwargs) -> subprocess.CompletedProcess:
        """``docker compose ARGS`` under this console's .env (any service)."""
        return compose(*args, env_file=self.env_file, **kwargs)

    def exec(self, *command, env: list = (), **kwargs) -> subprocess.CompletedProcess:
        """``docker compose exec -T [ENV] SERVICE COMMAND`` in the console; env: ``-e NAME=VALUE`` options."""
        return compose("exec", "-T", *env, self.service, *command, env_file=self.env_file, **kwargs)

    def require(self):
        """Raise HostError unless the console's container runs."""
        require_admin(self.env_file, self.service)


RECORDED = "# --- recorded by {by}: the choices of its last run, used by every later command on this host ---"


def record_settings(path: str, values: dict, by: str) -> list:
    """Write ``values`` (KEY -> VALUE) into the .env at ``path`` as one block at its end, replacing the block ``by``
    wrote before; an active ``KEY=`` line elsewhere is commented out so the block is what compose and the scripts
    read. A key of the previous block that is not in ``values`` goes back to .env's own line or the default.
    Returns the lines written."""
    header = RECORDED.format(by=by)
    with open(path) as f:
        lines = f.read().splitlines()
    if header in lines:
        end = lines.index(header) + 1
        while end < len(lines) and lines[end] and not lines[end].startswith("# ---"):
            end += 1
        lines = lines[:lines.index(header)] + lines[end:]
        while lines and not lines[-1].strip():
            lines.pop()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        out.append(f"# {line}   (set by {by} below)" if key in values else line)
    block = [f"{k}={v}" for k, v in values.items()]
    out += ["", header, *block] if block else []
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return block


def main(argv=None) -> int:
    """python3 -m fl_deploy.host record ENV_FILE BY KEY=VALUE ...  (scripts/demo.sh records its choices)"""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] != "record" or not all("=" in a for a in argv[3:]):
        print(main.__doc__, file=sys.stderr)
        return 2
    record_settings(argv[1], dict(a.split("=", 1) for a in argv[3:]), argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
