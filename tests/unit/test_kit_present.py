"""docker/kit_present.py (fl-kit-present): a kit that is missing vs one that is there but closed to the container's
user (a hardened umask, SELinux, rootless Docker's uid mapping), never the one reported as the other."""

import importlib.util
import os
import shutil
import subprocess
import tempfile

import pytest

from fl_deploy import IMAGE_UID
from fl_deploy.harness import local_federation

SCRIPT = os.path.join(local_federation.ROOT, "docker", "kit_present.py")


def load():
    spec = importlib.util.spec_from_file_location("kit_present", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def site_kit(top: str, umask: int) -> str:
    """A site kit as `nvflare provision` lays it out, made under ``umask``."""
    old = os.umask(umask)
    try:
        startup = os.path.join(top, "kit", "startup")
        os.makedirs(startup)
        for name in ("sub_start.sh", "fed_client.json", "client.key"):
            with open(os.path.join(startup, name), "w") as f:
                f.write("x")
    finally:
        os.umask(old)
    return os.path.join(top, "kit")


@pytest.fixture
def open_dir():
    """A folder any uid may enter (pytest's tmp_path is private to root)."""
    top = tempfile.mkdtemp(prefix="kit-present-")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as 10001")
def test_a_kit_made_under_umask_077_is_named_closed_not_missing(open_dir):
    """The real thing: a kit provisioned under umask 077 by root, checked as the image's uid by the kernel."""
    kit = site_kit(open_dir, 0o077)
    as_image_user = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "/usr/bin/python3",
                     SCRIPT, kit]
    run = subprocess.run(as_image_user, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "no startup kit" not in run.stderr
    assert run.stderr.startswith(f"error: the startup kit is there but this container (uid {IMAGE_UID}) cannot "
                                 f"read {kit}: it belongs to uid 0 (mode 0700; a umask like 077"), run.stderr
    assert f"sudo chown -R {IMAGE_UID}:{IMAGE_UID}" in run.stderr and "FL_UID" not in run.stderr  # never as root
    os.chmod(kit, 0o755)  # the folder opened, startup/ still 0700: named as the one it cannot enter
    run = subprocess.run(as_image_user, capture_output=True, text=True, timeout=30)
    assert f"cannot read {kit}/startup: it belongs to uid 0 (mode 0700" in run.stderr, run.stderr
    for path in (kit + "/startup", kit + "/startup/sub_start.sh"):
        os.chmod(path, 0o755)
    assert subprocess.run(as_image_user, capture_output=True, text=True, timeout=30).returncode == 0


def test_missing_kits_are_named_missing(tmp_path):
    kp = load()
    assert kp.kit_problem(str(tmp_path / "none"), uid=0, gids={0}).startswith(
        f"error: no startup kit at {tmp_path / 'none'} ({tmp_path / 'none'} does not exist): provision first")
    (tmp_path / "empty").mkdir()  # what Docker creates for a bind mount whose host folder does not exist
    assert "the folder mounted there, the kit folder, is empty" in kp.kit_problem(str(tmp_path / "empty"))
    (tmp_path / "other" / "startup").mkdir(parents=True)
    (tmp_path / "other" / "startup" / "readme").write_text("x")
    assert "holds neither sub_start.sh nor fed_admin.json" in kp.kit_problem(str(tmp_path / "other"))
    assert kp.kit_problem(site_kit(str(tmp_path), 0o022)) == ""
    st = os.stat_result((0o40700, 0, 0, 0, 1000, 1000, 0, 0, 0, 0))  # unpacked by uid 1000: running as it is a fix
    assert "or run the containers as uid 1000 (FL_UID=1000 in .env" in kp.closed_message("/kit", st, "read", IMAGE_UID,
                                                                                         {IMAGE_UID}, "/srv/kit")


def test_mode_bits_that_allow_what_the_kernel_refused_name_selinux():
    """SELinux cannot be switched on here: the classifier gets the stat a labelled-out kit shows (0755, open to all)."""
    kp = load()
    st = os.stat_result((0o40755, 0, 0, 0, 1000, 1000, 0, 0, 0, 0))
    line = kp.closed_message("/kit", st, "read", IMAGE_UID, {IMAGE_UID}, "/srv/fl/workspace/kits/site-1")
    assert "its mode 0755 allows it, so a security label refuses it (SELinux" in line
    assert "chcon -Rt container_file_t /srv/fl/workspace/kits/site-1" in line and ":/kit:ro,z" in line


def test_rootless_docker_names_the_host_uid_to_chown_to(monkeypatch):
    """Rootless Docker: container root is the user running dockerd (uid 1000), other uids map onto its subuid range
    (100000 + n - 1). Files of that user show as root inside; the chown on the host must name the mapped uid."""
    monkeypatch.setenv("FL_IMAGE", "IMAGE")  # services.yaml passes the image's name
    kp = load()
    uid_map = "         0       1000          1\n         1     100000      65536\n"
    assert kp.host_id(0, uid_map) == 1000 and kp.host_id(IMAGE_UID, uid_map) == 100000 + IMAGE_UID - 1
    assert kp.host_id(70000, uid_map) is None and kp.identity_map("0 0 4294967295\n")
    st = os.stat_result((0o40700, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    line = kp.closed_message("/kit/startup", st, "read", IMAGE_UID, {IMAGE_UID}, "/home/ann/fl/workspace/kits/site-1",
                             uid_map=uid_map)
    host_uid = 100000 + IMAGE_UID - 1
    assert f"it belongs to your own uid (root here) (mode 0700) and Docker runs rootless" in line
    assert f"sudo chown -R {host_uid}:{host_uid} /home/ann/fl/workspace/kits/site-1" in line
    assert f"-u 0 -v /home/ann/fl/workspace/kits/site-1:/k --entrypoint chown IMAGE -R {IMAGE_UID}:{IMAGE_UID}" in line


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as 10001")
def test_under_a_user_namespace_a_private_key_is_named_with_the_host_uid(open_dir):
    """Rootless: the start file is readable, client.key (0600, the host user = root in the container) is not. Under
    an identity map that is fl-kit-check access's to name; under a user namespace map this check names it, with the
    host uid the chown must give it to. The map is given; the kernel's refusal is real (setpriv to 10001)."""
    kit = site_kit(open_dir, 0o022)
    os.chmod(os.path.join(kit, "startup", "client.key"), 0o600)
    probe = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('kp', {SCRIPT!r}); "
             "kp = importlib.util.module_from_spec(s); s.loader.exec_module(kp); "
             f"print(kp.kit_problem({kit!r}, maps=dict(uid_map=sys.argv[1], gid_map=sys.argv[1])))")
    as_image_user = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "/usr/bin/python3",
                     "-c", probe]
    identity = subprocess.run(as_image_user + ["0 0 4294967295"], capture_output=True, text=True, timeout=30)
    assert identity.stdout.strip() == "", identity.stderr
    rootless = subprocess.run(as_image_user + ["0 1000 1\n1 100000 65536"], capture_output=True, text=True,
                              timeout=30)
    host_uid = 100000 + IMAGE_UID - 1
    assert f"cannot read {kit}/startup/client.key: it belongs to your own uid (root here) (mode 0600) and Docker " \
           f"runs rootless" in rootless.stdout and f"sudo chown -R {host_uid}:{host_uid}" in rootless.stdout, \
        rootless.stdout + rootless.stderr


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as 10001")
def test_check_host_does_not_call_a_kit_it_cannot_enter_missing(open_dir):
    """On the host too: a kit closed to the user running check_host.py --kits (umask 077, or given to the
    containers' uid) is there; only one with no startup/ is missing."""
    kit = site_kit(open_dir, 0o077)
    model = {"services": {"site-1": {"volumes": [{"target": "/kit", "source": kit}]},
                          "site-2": {"volumes": [{"target": "/kit", "source": os.path.join(open_dir, "none")}]}}}
    probe = f"from fl_deploy.check_host import check_kits; check_kits({model!r})"
    run = subprocess.run(["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups",
                          "/usr/bin/python3", "-c", probe], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=local_federation.ROOT))
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("fl_deploy.host.HostError: no startup kit in "), run.stderr
    named = last.split("no startup kit in ")[1].split(": provision")[0].split(", ")
    assert len(named) == 1 and named[0].endswith("/none"), last  # the closed kit is not named
