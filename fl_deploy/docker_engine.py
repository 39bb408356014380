"""The container engine of this host as its own outputs tell it (`docker info`, `docker version`, `docker compose
version`): the way GPUs reach the containers, Compose against what the compose files use, rootless mode, Podman.

    python3 -m fl_deploy.docker_engine gpu    one line: the GPU path Docker takes (exit 0), or why the demo runs on
                                              CPU (exit 3: no NVIDIA GPU here), or the fix (exit 2: a GPU host whose
                                              Docker cannot pass its GPUs); exit 4: `docker info` did not answer

Standard library only: scripts/check_host.py and scripts/demo.sh run it before any venv exists.
"""

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys

from fl_deploy import ROOT

# Compose features the compose files use, with the Compose release that brought each (Docker's Compose release
# notes, docs.docker.com/compose/releases/release-notes/): `include` in 2.20.0 ("Added support for the include and
# attach attributes"); `!reset` shipped in 2.18.0 (compose-go v1.13.5's ResetProcessor, the compose-go 2.18.0 pins;
# the release notes do not name it). The highest is the minimum.
COMPOSE_FEATURES = {"include (compose.yaml)": (2, 20, 0),
                    "!reset (compose.cpu.yaml, docker/site-host.yaml)": (2, 18, 0)}
COMPOSE_MINIMUM = max(COMPOSE_FEATURES.values())
# Releases that read the files but deploy them wrong: 2.32.x drops `depends_on` from a service that uses `extends`
# (docker/compose#12402, fixed in 2.33.0), so the sites would start before the server is healthy.
COMPOSE_BROKEN = [((2, 32, 0), (2, 33, 0), "drops the depends_on of services that use extends (docker/compose#12402, "
                   "fixed in 2.33.0): the sites would start before the server is healthy")]

NVIDIA_HOOK = "nvidia-container-runtime-hook"  # Docker's built-in `nvidia` device driver (moby daemon/nvidia_linux.go)
# Docker Engine 29.2.0 serves `--gpus` / Compose's `driver: nvidia` through CDI when an nvidia.com/gpu spec exists
# (moby/moby#50228, Docker Engine 29 release notes); older engines with CDI need the hook or the runtime.
CDI_FOR_NVIDIA_DRIVER = (29, 2, 0)


def version_tuple(text: str) -> tuple:
    """(major, minor, patch) of 'v2.40.3', '2.24.6-desktop.1', '5.0.1'; () when there is no version in it."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in m.groups()) if m else ()


def dotted(version: tuple) -> str:
    return ".".join(map(str, version))


def _run(*argv) -> str:
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return run.stdout if run.returncode == 0 else ""


def engine_info() -> dict:
    """`docker info` as JSON (Docker's keys: Runtimes, CDISpecDirs, SecurityOptions, ServerVersion; Podman answers
    with its own: host, version, ...); {} when it cannot be read."""
    try:
        info = json.loads(_run("docker", "info", "--format", "{{json .}}") or "{}")
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


# --- Compose ------------------------------------------------------------------------------------------------------

def compose_problem(version_text: str) -> str:
    """'' when this Compose (`docker compose version --short`) deploys the compose files as written; else one
    sentence naming the minimum and why."""
    version = version_tuple(version_text)
    if not version:
        return ""  # not a version we can read (a provider's own text): `docker compose config` will tell
    if version < COMPOSE_MINIMUM:
        needs = ", ".join(f"{name} from {dotted(v)}" for name, v in COMPOSE_FEATURES.items() if version < v)
        return (f"Docker Compose {dotted(version)} is older than {dotted(COMPOSE_MINIMUM)}, the first that reads this "
                f"project's compose files ({needs}): upgrade the docker-compose-plugin package "
                "(https://docs.docker.com/compose/install/linux/)")
    for low, high, why in COMPOSE_BROKEN:
        if low <= version < high:
            return f"Docker Compose {dotted(version)} {why}: upgrade the docker-compose-plugin package"
    return ""


# --- GPUs ---------------------------------------------------------------------------------------------------------

def nvidia_cdi_specs(dirs) -> list:
    """The CDI spec files under ``dirs`` that declare NVIDIA GPUs (kind nvidia.com/gpu, as `nvidia-ctk cdi
    generate` writes them)."""
    found = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.json"))):
            try:
                with open(path, errors="replace") as f:
                    if "nvidia.com/gpu" in f.read():
                        found.append(path)
            except OSError:
                pass
    return found


def host_gpu() -> str:
    """The NVIDIA driver this host runs ('' when none): /proc/driver/nvidia/version's first line."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return ""


def gpu_paths(info: dict, which=shutil.which, cdi_specs=nvidia_cdi_specs) -> list:
    """Each working way Compose's `driver: nvidia` reservation gets GPUs into the containers here."""
    paths = []
    hook = which(NVIDIA_HOOK)
    if hook:
        paths.append(f"NVIDIA's hook {hook} (Docker's built-in nvidia device driver)")
    if "nvidia" in (info.get("Runtimes") or {}):
        paths.append("the nvidia runtime registered in Docker")
    # Docker 29 lists the CDI devices it found (`docker info` DiscoveredDevices), also where we cannot read the specs
    found = [d.get("ID", "") for d in info.get("DiscoveredDevices") or [] if isinstance(d, dict)]
    specs = cdi_specs(info.get("CDISpecDirs") or []) or [i for i in found if i.startswith("nvidia.com/gpu")][:1]
    if specs and version_tuple(info.get("ServerVersion")) >= CDI_FOR_NVIDIA_DRIVER:
        paths.append(f"CDI ({specs[0]}; Docker {info.get('ServerVersion')} maps driver: nvidia onto it)")
    return paths


def gpu_choice(info: dict, which=shutil.which, cdi_specs=nvidia_cdi_specs, driver=host_gpu,
               docker_version: str = "") -> tuple:
    """(exit code, one line): 0 and the path GPUs take; 3 and why the demo runs on CPU (this host shows no NVIDIA
    GPU); 2 and the fix (a GPU, or NVIDIA's CDI spec, that Docker cannot use; Podman, unchecked). ``docker_version``:
    `docker --version`, which tells podman-docker's wrapper."""
    if podman(docker_version, info):
        return 2, ("GPUs through Podman are not checked by this project (it passes GPUs through CDI, not Compose's "
                   "driver: nvidia): run on CPU with --cpu, or FL_SKIP_GPU_CHECK=1 to try")
    paths = gpu_paths(info, which, cdi_specs)
    if paths:
        return 0, f"GPUs through {paths[0]}" + (f" (also: {'; '.join(paths[1:])})" if paths[1:] else "")
    toolkit = ("install nvidia-container-toolkit (its hook; nvidia-ctk runtime configure --runtime=docker, then "
               "restart Docker)")
    specs = cdi_specs(list(dict.fromkeys(["/etc/cdi", "/var/run/cdi", *(info.get("CDISpecDirs") or [])])))
    version = info.get("ServerVersion") or "?"
    if specs and not info.get("CDISpecDirs"):
        return 2, (f"NVIDIA's CDI spec {specs[0]} is here but Docker {version} has CDI switched off (docker info "
                   "lists no CDISpecDirs): add \"features\": {\"cdi\": true} to /etc/docker/daemon.json and restart "
                   f"Docker, or {toolkit}; or run on CPU with --cpu")
    if specs:
        return 2, (f"Docker {version} reads NVIDIA's CDI spec {specs[0]} but serves Compose's GPU reservation "
                   f"(driver: nvidia) through CDI only from Docker Engine {dotted(CDI_FOR_NVIDIA_DRIVER)} "
                   f"(moby/moby#50228): upgrade Docker, or {toolkit}; or run on CPU with --cpu")
    gpu = driver()
    if gpu and info.get("CDISpecDirs") and version_tuple(version) >= CDI_FOR_NVIDIA_DRIVER and which("nvidia-ctk"):
        return 2, (f"this host has an NVIDIA GPU ({gpu[:60]}) and Docker {version} reads CDI, but no NVIDIA CDI spec "
                   "is there: sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml; or run on CPU with --cpu")
    if gpu:
        return 2, (f"this host has an NVIDIA GPU ({gpu[:60]}) but Docker cannot pass it to containers (no nvidia "
                   f"runtime, no {NVIDIA_HOOK}, no NVIDIA CDI spec): {toolkit}; or run on CPU with --cpu")
    return 3, ("no NVIDIA GPU on this host (no /proc/driver/nvidia/version) and Docker has no nvidia runtime, hook "
               "or CDI spec")


# --- rootless Docker, Podman --------------------------------------------------------------------------------------

def rootless(info: dict) -> bool:
    """Docker runs rootless (`docker info` SecurityOptions name=rootless; Podman: host.security.rootless)."""
    if any("rootless" in str(o) for o in info.get("SecurityOptions") or []):
        return True
    return bool(((info.get("host") or {}).get("security") or {}).get("rootless"))


def subid_start(user: str, uid: int, subuid_text: str):
    """The first host uid of ``user``'s subordinate range (/etc/subuid rows: name-or-uid:start:count)."""
    for row in subuid_text.splitlines():
        fields = row.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)):
            return int(fields[1])
    return None


def rootless_warning(container_uid: int, subuid_text: str, user: str = None, uid: int = None, image: str = "IMAGE",
                     paths: str = "workspace/kits assets") -> str:
    """One line: under rootless Docker container uid N is host uid start + N - 1 (user_namespaces(7); container
    root is the user running dockerd), and the chown that gives the bind-mounted folders to it."""
    uid = os.getuid() if uid is None else uid
    user = user or pwd.getpwuid(uid).pw_name
    start = subid_start(user, uid, subuid_text)
    first = paths.split()[0]
    in_userns = (f"docker run --rm -u 0 -v \"$PWD/{first}:/d\" --entrypoint chown {image} -R "
                 f"{container_uid}:{container_uid} /d (container root is you, so no sudo)")
    if container_uid == 0:
        return "Docker runs rootless: the containers' root is your own uid; bind-mounted folders need nothing"
    if start is None:
        return (f"Docker runs rootless but /etc/subuid has no range for {user}: container uid {container_uid} maps "
                f"to no host uid; add one (usermod --add-subuids 100000-165535 {user}) and restart Docker")
    host_uid = start + container_uid - 1
    return (f"Docker runs rootless: the containers' uid {container_uid} is uid {host_uid} on this host (/etc/subuid: "
            f"{user}:{start}:...), so what they read or write through bind mounts ({paths}) must be open to uid "
            f"{host_uid}: sudo chown -R {host_uid}:{host_uid} {paths}, or per folder {in_userns}")


def podman(version_text: str, info: dict) -> str:
    """The Podman version when `docker` is Podman (podman-docker's wrapper: `docker --version` says podman; or the
    Docker CLI on Podman's socket: `docker info` has Podman's keys); '' for Docker."""
    m = re.search(r"podman version (\S+)", version_text or "", re.I)
    if m:
        return m.group(1)
    if "host" in info and "ServerVersion" not in info:
        return str(((info.get("version") or {}).get("Version")) or "?")
    return ""


def podman_note(version: str) -> str:
    return (f"`docker` here is Podman {version}: what is meant to work (Podman's documentation) is Docker Compose v2 "
            "on Podman's Docker-API socket (systemctl --user start podman.socket; "
            "DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock), rootless (see the chown line); not checked by "
            "this project: healthchecks run only where Podman has systemd timers (without them the server never "
            "turns healthy and `up --wait` waits), GPUs come through CDI (nvidia-ctk cdi generate) and Podman's "
            "mapping of Compose's driver: nvidia is untested, and podman-compose as the compose provider (its "
            "--profile \"*\", the README's teardown, selects nothing: containers/podman-compose#1431; use "
            "docker-compose)")


def selinux_warning(folder: str, enforce_path: str = "/sys/fs/selinux/enforce") -> str:
    """One line when SELinux enforces and ``folder`` (the project: kits, assets and code are bind-mounted from it)
    lacks the container_file_t label the containers need to read it; '' otherwise."""
    try:
        with open(enforce_path) as f:
            if f.read().strip() != "1":
                return ""
    except OSError:
        return ""
    try:
        label = os.getxattr(folder, "security.selinux").decode(errors="replace").strip("\0")
    except OSError:
        label = "no label readable"
    if "container_file_t" in label:
        return ""
    return (f"SELinux is enforcing and {folder} is labelled {label}, not container_file_t: the containers would be "
            f"refused the kits, assets and code mounted from it (fl-kit-present names it at start); fix: chcon -Rt "
            f"container_file_t {folder} (kept across a relabel: semanage fcontext -a -t container_file_t "
            f"'{folder}(/.*)?' && restorecon -R {folder})")


def host_findings(container_uid: int, image: str = "IMAGE", info: dict = None, folder: str = ROOT) -> tuple:
    """(problem, notes) for scripts/check_host.py: a Compose it must refuse ('' when none), and one line each for
    Podman, rootless Docker (what works, the chown the bind mounts need) and SELinux (the label they need)."""
    info = engine_info() if info is None else info
    notes = [selinux_warning(folder)]
    version = podman(_run("docker", "--version"), info)
    if version:
        notes.append(podman_note(version))
    if rootless(info):
        try:
            with open("/etc/subuid") as f:
                subuid = f.read()
        except OSError:
            subuid = ""
        notes.append(rootless_warning(container_uid, subuid, image=image))
    return compose_problem(_run("docker", "compose", "version", "--short")), [n for n in notes if n]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["gpu"]:
        print(__doc__, file=sys.stderr)
        return 2
    info = engine_info()
    if not info:  # no answer (Docker down, no permission): no choice; scripts/check_host.py names the problem
        print("`docker info` gave no answer", file=sys.stderr)
        return 4
    code, line = gpu_choice(info, docker_version=_run("docker", "--version"))
    print(f"error: {line}" if code == 2 else line, file=sys.stderr if code == 2 else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
