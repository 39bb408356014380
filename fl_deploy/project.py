"""project.yml, read and checked once: the federation's shape as one value (``Project``).

Everything that needs to know who takes part — provisioning, the compose services, the job's site list, the site
bundles, the process federation of the tests and benchmarks — takes a ``Project`` from ``load_project`` instead of
parsing the file itself. The file is NVFlare's own project format (``nvflare provision -p project.yml``); this module
only reads the parts the deployment depends on and refuses, in one sentence, what the deployment cannot run.
"""

import ipaddress
import os
import re
from dataclasses import dataclass, field

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_NAME_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # one label of a host name
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
class Dial:
    """Where one participant's kit connects: ``host:port`` as NVFlare writes it into fed_client.json / fed_admin.json,
    and which key of project.yml chose the host ("default_host", "connect_to" or the server's "name")."""

    host: str
    port: int
    source: str


@dataclass(frozen=True)
class Project:
    """The federation as project.yml declares it.

    ``server`` is the server's name in project.yml; ``server_kit`` the folder NVFlare writes its kit to (the name
    cut to 64 characters, the longest certificate subject); ``server_host`` the host name every kit dials and the
    server's certificate answers to (``default_host`` when given, else the name); ``dials`` where each site's and
    admin's kit connects (NVFlare's rules: a participant's ``connect_to`` wins over the server's default host)."""

    path: str
    name: str
    server: str
    server_host: str
    port: int
    scheme: str
    sites: tuple
    admins: tuple
    dials: dict = field(default_factory=dict, compare=False, repr=False)
    server_names: tuple = ()
    builders: list = field(default_factory=list, compare=False, repr=False)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def server_kit(self) -> str:
        return self.server[:MAX_CN_LENGTH]

    @property
    def server_aliases(self) -> list:
        """Every host name a kit dials to reach the server: the names the server must answer to on the network
        (compose aliases on one host, extra_hosts on the others). The default host first."""
        return list(dict.fromkeys([self.server_host, *(d.host for d in self.dials.values())]))

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


def _dial(p: dict, server: dict, server_host: str, default_port: int) -> Dial:
    """The host:port NVFlare 2.9 writes into a participant's kit (StaticFileBuilder._determine_conn_target): its
    connect_to host and port when given (a plain string is a host), else the server's default host and port. A
    connect_to naming a participant other than the server (a relay) keeps the server's host here; the deployment
    check refuses it."""
    ct = p.get("connect_to")
    if not ct:
        return Dial(server_host, default_port, "default_host" if server.get("default_host") else "name")
    if isinstance(ct, str):
        return Dial(ct, default_port, "connect_to")
    if not isinstance(ct, dict):
        raise ProjectError(f"{p['name']}'s connect_to must be a host name or a mapping (name, host, port), "
                           f"got {ct!r}")
    if ct.get("name") and str(ct["name"]) not in (str(server["name"]), str(server["name"])[:MAX_CN_LENGTH]):
        return Dial(server_host, default_port, f"relay {ct['name']}")
    try:
        port = int(ct.get("port") or default_port)
    except (TypeError, ValueError):
        raise ProjectError(f"{p['name']}'s connect_to port must be a port number, got {ct.get('port')!r}") from None
    return Dial(str(ct.get("host")), port, "connect_to")  # no host: NVFlare writes "None:<port>"


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
    server_host = str(server.get("default_host") or server["name"])
    try:
        admin_port = int(server.get("admin_port", port))
    except (TypeError, ValueError):
        raise ProjectError(f"the server's admin_port in {path} must be a port number, got "
                           f"{server.get('admin_port')!r}") from None
    dials = {str(p["name"]): _dial(p, server, server_host, port) for p in by_type["client"]}
    dials.update({str(p["name"]): _dial(p, server, server_host, admin_port) for p in by_type["admin"]})
    host_names = server.get("host_names") or []
    host_names = [host_names] if isinstance(host_names, str) else list(host_names)
    return Project(
        path=path,
        name=str(raw["name"]),
        server=str(server["name"]),
        server_host=server_host,
        port=port,
        scheme=str((builder.get("args") or {}).get("scheme", DEFAULT_SCHEME)),
        sites=sites,
        admins=admins,
        dials=dials,
        # The names the server's certificate answers to (NVFlare's CertBuilder: default host + host_names).
        server_names=tuple(dict.fromkeys([server_host, *map(str, host_names)])),
        builders=list(raw.get("builders") or []),
        raw=raw,
    )


def load_project(path: str) -> Project:
    """project.yml at ``path``, parsed and checked; ProjectError names what to change."""
    return parse_project(_read_yaml(path), path)


def _is_dns_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(DNS_NAME_LABEL.match(label) for label in labels)


def _not_mappable(host: str) -> str:
    """Why a container cannot be pointed at ``host`` by the deployment, or ''."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            return "a loopback name: inside a container it is the container itself"
        return "" if _is_dns_name(host) else "not a valid DNS name (labels of letters, digits and '-', at most 63 " \
                                              "characters each, 253 in all)"
    return ("a loopback address: inside a container it is the container itself" if address.is_loopback
            else "an IP address: the deployment maps the server's host name to its address")


def check_deployable(project: Project):
    """Refuse, in one sentence, the connection settings the container deployment cannot honour. Every kit dials
    a host name that the deployment maps to the server: a compose network alias on the server's host, extra_hosts
    with FL_SERVER_ADDRESS on a site's host. So each name a kit dials must be a DNS name the server's certificate
    answers to, on the one port the server listens on and publishes; relays are not deployed. (The process
    federation of the tests runs kits as they are and does not call this.)"""
    admin_port = int(next(p for p in project.raw["participants"] if p.get("type") == "server").get(
        "admin_port", project.port))
    if admin_port != project.port:
        raise ProjectError(
            f"the server's admin_port {admin_port} in {project.path} differs from its fed_learn_port {project.port}: "
            "the containers publish one port for sites and admins; remove admin_port")
    for name, dial in project.dials.items():
        fix = (f"remove {name}'s connect_to (its kit then dials the server's default host {project.server_host!r})"
               if dial.source == "connect_to" else "set the server's default_host to the name the kits should dial")
        if dial.source.startswith("relay"):
            raise ProjectError(
                f"{name}'s connect_to in {project.path} names {dial.source}: this deployment runs no NVFlare "
                f"relays, every site connects to the server; remove connect_to.name")
        if dial.host == "None":
            raise ProjectError(f"{name}'s connect_to in {project.path} has no host, so NVFlare would write "
                               f"'None:{dial.port}' into its kit; give connect_to a host, or {fix}")
        why = _not_mappable(dial.host)
        if why:
            raise ProjectError(f"{name}'s kit would dial {dial.host!r} ({dial.source} in {project.path}), {why}; "
                               f"the containers reach the server by a host name mapped to its address, so {fix}")
        if dial.host not in project.server_names:
            raise ProjectError(
                f"{name}'s kit would dial {dial.host!r} ({dial.source} in {project.path}) but the server's "
                f"certificate answers only to {', '.join(project.server_names)}, so TLS would refuse it; add "
                f"{dial.host!r} to the server's host_names, or {fix}")
        if dial.port != project.port:
            raise ProjectError(
                f"{name}'s kit would dial port {dial.port} ({dial.source} in {project.path}) but the server listens "
                f"on its fed_learn_port {project.port}, the one port the containers publish; remove "
                f"connect_to.port")
