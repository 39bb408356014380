"""The container's start on a kit it cannot read, on a real engine (issue 24, case 7): docker/entrypoint.sh's kit
check as the image's uid, the kit bind-mounted read-only as compose mounts it. A kit made under umask 077 is named
closed (owner, mode, the host folder, the fix), a host folder that does not exist is named missing. Runs the entrypoint
and fl-kit-present from this checkout in the base image (seconds): no image build, no stack."""

import os
import subprocess

from fl_deploy import BASE_IMAGE, IMAGE_UID, ROOT
from docker_env import require_docker

require_docker()
IMAGE = os.environ.get("FL_TEST_BASE_IMAGE") or BASE_IMAGE


def image_tools() -> list:
    """-v mounts of the files docker/Dockerfile copies into /usr/local/bin (the entrypoint, its checks and what they
    import), from this checkout: the base image then starts as the built image would."""
    import re

    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        copies = re.findall(r"^COPY (\S+) (/usr/local/bin/\S+)$", f.read(), re.M)
    assert copies, "docker/Dockerfile copies nothing into /usr/local/bin"
    return [arg for src, dest in copies for arg in ("-v", f"{ROOT}/{src}:{dest}:ro")]


def start_site(kit_source: str) -> subprocess.CompletedProcess:
    """`fl-entrypoint site` as the image's uid with ``kit_source`` at /kit (read-only), as compose starts a site."""
    return subprocess.run(
        ["docker", "run", "--rm", "-u", f"{IMAGE_UID}:{IMAGE_UID}", "--entrypoint", "fl-entrypoint", *image_tools(),
         "-v", f"{kit_source}:/kit:ro", IMAGE, "site"], capture_output=True, text=True, timeout=120)


def test_a_kit_the_container_cannot_read_is_not_reported_missing(tmp_path):
    old = os.umask(0o077)
    try:
        startup = tmp_path / "kit" / "startup"
        startup.mkdir(parents=True)
        for name in ("sub_start.sh", "fed_client.json", "client.key"):
            (startup / name).write_text("x")
    finally:
        os.umask(old)
    owner = os.stat(tmp_path / "kit").st_uid
    run = start_site(str(tmp_path / "kit"))
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.strip() == (
        f"error: the startup kit is there but this container (uid {IMAGE_UID}) cannot read /kit: it belongs to uid "
        f"{owner} (mode 0700; a umask like 077 or another user's unpacking made it private); fix: on the host, sudo "
        f"chown -R {IMAGE_UID}:{IMAGE_UID} {tmp_path / 'kit'} (the keys stay private to that owner)"
        + ("" if owner == 0 else f", or run the containers as uid {owner} (FL_UID={owner} in .env, then docker "
                                 "compose build)")), run.stderr

    run = start_site(str(tmp_path / "never-provisioned"))  # Docker creates the missing host folder, empty
    assert run.returncode == 2
    assert run.stderr.strip().startswith(f"error: no startup kit at /kit (the folder mounted there, "
                                         f"{tmp_path / 'never-provisioned'}, is empty): provision first"), run.stderr
