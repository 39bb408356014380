"""project.yml, read and checked once: the federation's shape as one value (``Project``).

Everything that needs to know who takes part — provisioning, the compose services, the job's site list, the site
bundles, the process federation of the tests and benchmarks — takes a ``Project`` from ``load_project`` instead of
parsing the file itself. The file is NVFlare's own project format (``nvflare provision -p project.yml``); this module
only reads the parts the deployment depends on and refuses, in one sentence, what the deployment cannot run.
"""

import os
import re
from dataclasses import dataclass, field

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_PORT = 8002  # NVFlare's fed_learn_port default (lighter/impl/static_file.py)
DEFAULT_SCHEME = "http"  # StaticFileBuilder's default connection scheme in NVFlare 2.9
MAX_CN_LENGTH = 64  # NVFlare truncates certificate subjects, and so the server's kit folder, to this (cert.py)
STATIC_FILE_BUILDER = ".StaticFileBuilder"
SUBMITTING_ROLES = ("project_admin", "lead")  # NVFlare's default authorization: may submit jobs with custom code


class ProjectError(ValueError):
    """project.yml cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class Admin:
    name: str
    role: str
    service: str  # its compose service: "admin" for the first admin, "admin-2", ... for the others


@dataclass(frozen=True)
class Project:
    """The federation as project.yml declares it.

    ``server`` is the server's name in project.yml; ``server_kit`` the folder NVFlare writes its kit to (the name
    cut to 64 characters, the longest certificate subject); ``server_host`` the host name every kit dials and the
    server's certificate answers to (``default_host`` when given, else the name)."""

    path: str
    name: str
    server: str
    server_host: str
    port: int
    scheme: str
    sites: tuple
    admins: tuple
    builders: list = field(default_factory=list, compare=False, repr=False)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def server_kit(self) -> str:
        return self.server[:MAX_CN_LENGTH]

    @property
    def participants(self) -> list:
        """Every participant's kit folder name: the server, the sites, the admins."""
        return [self.server_kit, *self.sites, *(a.name for a in self.admins)]

    def admin(self, service: str) -> Admin:
        for a in self.admins:
            if a.service == service:
                return a
        raise ProjectError(f"no admin console {service!r}: project.yml's admins are "
                           f"{', '.join(f'{a.service} ({a.name})' for a in self.admins)}")


def connection_builder(raw: dict):
    """The builder entry that gives the kits their connection settings (StaticFileBuilder), or None."""
    return next((b for b in raw.get("builders") or [] if str(b.get("path", "")).endswith(STATIC_FILE_BUILDER)),
                None)


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise ProjectError(f"{path} not found: the federation is described in project.yml (see README)")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ProjectError(f"{path} is not valid YAML: {e}".splitlines()[0]) from e
    if not isinstance(raw, dict) or not isinstance(raw.get("participants"), list):
        raise ProjectError(f"{path} has no 'participants' list")
    if not raw.get("name"):
        raise ProjectError(f"{path} has no project 'name'")
    return raw


def parse_project(raw: dict, path: str = "project.yml") -> Project:
    """The Project of an already-parsed project.yml (a dict), checked."""
    by_type = {"server": [], "client": [], "admin": []}
    for p in raw["participants"]:
        if not isinstance(p, dict) or "name" not in p or "type" not in p:
            raise ProjectError(f"participant entry {p!r} in {path} needs a 'name' and a 'type'")
        by_type.setdefault(p["type"], []).append(p)
    if len(by_type["server"]) != 1:
        raise ProjectError(f"{path}: the project needs exactly one server (type: server), found {len(by_type['server'])}")
    if not by_type["client"]:
        raise ProjectError(f"{path} has no sites (participants of type: client)")
    server = by_type["server"][0]
    sites = tuple(str(p["name"]) for p in by_type["client"])
    for site in sites:
        if not DNS_LABEL.match(site):
            raise ProjectError(
                f"site name {site!r} in {path} is not a valid DNS label (lower-case letters, digits, '-'; at most "
                "63): it becomes a container and host name")
    admins = tuple(Admin(str(p["name"]), str(p.get("role", "")), "admin" if i == 0 else f"admin-{i + 1}")
                   for i, p in enumerate(by_type["admin"]))
    names = [str(server["name"]), *sites, *(a.name for a in admins)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ProjectError(f"duplicate participant names in {path}: {', '.join(dup)}")
    try:
        port = int(server.get("fed_learn_port", DEFAULT_PORT))
    except (TypeError, ValueError):
        raise ProjectError(f"the server's fed_learn_port in {path} must be a port number, got "
                           f"{server.get('fed_learn_port')!r}") from None
    builder = connection_builder(raw) or {}
    return Project(
        path=path,
        name=str(raw["name"]),
        server=str(server["name"]),
        server_host=str(server.get("default_host") or server["name"]),
        port=port,
        scheme=str((builder.get("args") or {}).get("scheme", DEFAULT_SCHEME)),
        sites=sites,
        admins=admins,
        builders=list(raw.get("builders") or []),
        raw=raw,
    )


def load_project(path: str) -> Project:
    """project.yml at ``path``, parsed and checked; ProjectError names what to change."""
    return parse_project(_read_yaml(path), path)
