"""Slow case `kit-clock` (scripts/check_slow_cases.py): a kit's certificates under a shifted clock, in a container.

Kits provisioned from project.yml here (a real `nvflare provision`), then the image's own Python, `cryptography`
and OpenSSL run this checkout's start check (docker/kit_check.py and fl_deploy/kit_expiry.py, mounted over the
image's copies) with Debian's libfaketime preloaded (FAKETIME: the container's clock shifted, the host's untouched):

    now           fl-kit-check validity site    exit 0, the kit's dates
    +340 days     fl-kit-check validity site    exit 0, WARNING: ends within 30 days
    +365 days     fl-kit-check validity site    exit 2, the certificates expired, and the fix
    -2 hours      fl-kit-check validity site    exit 2, the clock behind the provisioning host's: skew and NTP fix
    +365 days     a mutual-TLS handshake of the site's kit with a server holding the server's kit (OpenSSL's own
                  check of the dates, as NVFlare's connection makes it): refused, and fl-kit-check names the expiry

and scripts/renew_kit.py site-1 while a container runs with site-1's kit mounted as compose mounts it: that
container keeps the old kit until it is restarted, and holds the new one after `docker restart`.

libfaketime comes from the host: its installed copy, else `apt-get download libfaketime` (a Debian/Ubuntu host
whose glibc the image's matches; the image is not changed). The image is --kit-image (default FL_IMAGE, else
fl_deploy.IMAGE: `docker compose build` makes it).
"""

import glob
import os
import shutil
import subprocess
import tempfile

LIBFAKETIME = "libfaketime.so.1"

# A TLS server holding the server's kit (mutual TLS, as NVFlare's), and the site's check of it (kit_check's
# reach_problem: the health output) with the kit in FL_KIT; prints the reason, or "handshake accepted".
HANDSHAKE = """
import importlib.machinery, importlib.util, os, socket, ssl, sys, threading
script, server = {script!r}, {server!r}
sys.path.insert(0, os.path.dirname(script))
loader = importlib.machinery.SourceFileLoader("kc", script)
kc = importlib.util.module_from_spec(importlib.util.spec_from_loader("kc", loader))
loader.exec_module(kc)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(server, "server.crt"), os.path.join(server, "server.key"))
ctx.load_verify_locations(os.path.join(server, "rootCA.pem"))
ctx.verify_mode = ssl.CERT_REQUIRED
listener = socket.create_server(("127.0.0.1", 0))
def serve():
    while True:
        conn, _ = listener.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()
threading.Thread(target=serve, daemon=True).start()
print(kc.reach_problem("localhost", listener.getsockname()[1])[1] or "handshake accepted")
"""
IN_IMAGE = HANDSHAKE.format(script="/usr/local/bin/fl-kit-check", server="/kits/fl-server/startup")

CHECKS = [  # (what, FAKETIME, command, exit code, words the output must hold)
    ("now", "", ["fl-kit-check", "validity", "site"], 0, ["site-1: certificate until", "(360 days left)"]),
    ("+340 days", "+340d", ["fl-kit-check", "validity", "site"], 0, ["WARNING: ends within 30 days"]),
    ("+365 days", "+365d", ["fl-kit-check", "validity", "site"], 2, ["expired on", "fix: a new root CA"]),
    ("-2 hours", "-2h", ["fl-kit-check", "validity", "site"], 2,
     ["hours) behind the host that provisioned the kit", "timedatectl set-ntp true"]),
    ("+365 days, mutual TLS", "+365d", ["python3", "-c", IN_IMAGE], 0,
     ["out of date by this container's clock (certificate has expired)", "scripts/renew_kit.py SERVER"]),
    ("now, mutual TLS", "", ["python3", "-c", IN_IMAGE], 0, ["handshake accepted"]),
]


def find_libfaketime(work: str) -> str:
    """The host's libfaketime.so.1: installed, else unpacked from `apt-get download libfaketime` into ``work``."""
    found = glob.glob(f"/usr/lib/*/faketime/{LIBFAKETIME}")
    if found:
        return found[0]
    run = subprocess.run(["apt-get", "download", "libfaketime"], cwd=work, capture_output=True, text=True,
                         timeout=300)
    debs = glob.glob(os.path.join(work, "libfaketime_*.deb"))
    if not debs:
        raise RuntimeError(f"libfaketime is not installed and apt-get download failed: {run.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(work, "deb")], check=True, timeout=60)
    return glob.glob(os.path.join(work, "deb", "usr", "lib", "*", "faketime", LIBFAKETIME))[0]


def kit_clock(args) -> list:
    from fl_deploy import IMAGE, ROOT, provision
    from fl_deploy.host import setting
    from fl_deploy.project import load_project

    image = args.kit_image or setting("FL_IMAGE", IMAGE)
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        raise RuntimeError(f"no image {image}: build it (docker compose build) or pass --kit-image")
    work = tempfile.mkdtemp(prefix="kit-clock-", dir=args.work)
    try:
        shutil.copy(os.path.join(ROOT, "project.yml"), work)
        project = load_project(os.path.join(work, "project.yml"))
        provision.provision(project, os.path.join(work, "ws"), "/workspace", force=False, service_uid=0)
        lib = find_libfaketime(work)
        results = []
        for what, shift, command, code, words in CHECKS:
            run = subprocess.run(
                ["docker", "run", "--rm", "-u", str(os.getuid()), "--entrypoint", command[0],
                 "-v", f"{os.path.join(work, 'ws', 'kits')}:/kits:ro", "-e", "FL_KIT=/kits/site-1",
                 "-v", f"{os.path.join(ROOT, 'docker', 'kit_check.py')}:/usr/local/bin/fl-kit-check:ro",
                 "-v", f"{os.path.join(ROOT, 'fl_deploy', 'kit_expiry.py')}:/usr/local/bin/kit_expiry.py:ro",
                 "-v", f"{lib}:/opt/{LIBFAKETIME}:ro", "-e", f"FAKETIME={shift}",
                 "-e", f"LD_PRELOAD={f'/opt/{LIBFAKETIME}' if shift else ''}", image, *command[1:]],
                capture_output=True, text=True, timeout=120)
            out = " ".join((run.stdout + run.stderr).split())
            ok = run.returncode == code and all(w in out for w in words)
            results.append((ok, what, f"exit {run.returncode}: {out[-700:]}"))
        return results + [renewed_while_running(image, work)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def renewed_while_running(image: str, work: str) -> tuple:
    """(passed, what, detail) of renewing site-1's kit while a container has it mounted."""
    from fl_deploy import renew_kit

    kit = os.path.join(work, "ws", "kits", "site-1")
    cid = subprocess.run(["docker", "run", "-d", "--entrypoint", "sleep", "-v", f"{kit}:/kit:ro", image, "600"],
                         capture_output=True, text=True, timeout=120).stdout.strip()

    def mounted() -> str:
        return subprocess.run(["docker", "exec", cid, "cat", "/kit/startup/client.crt"], capture_output=True,
                              text=True, timeout=60).stdout

    try:
        with open(os.path.join(kit, "startup", "client.crt")) as f:
            old = f.read()
        renew_kit.renew_kit(os.path.join(work, "project.yml"), os.path.join(work, "ws"), "site-1", service_uid=0)
        with open(os.path.join(kit, "startup", "client.crt")) as f:
            new = f.read()
        before = mounted()
        subprocess.run(["docker", "restart", "-t", "1", cid], capture_output=True, timeout=120)
        after = mounted()
        ok = new != old and before == old and after == new
        return ok, "renewed while running", (f"the running container kept the old certificate: {before == old}; "
                                             f"after docker restart it holds the new one: {after == new}")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=120)
