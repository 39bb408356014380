"""Issue 24 case 1: one command renews one participant's certificate under the same root CA, as a freshly signed
kit, and touches no other kit (a real `nvflare provision` of project.yml in a temporary workspace)."""

import datetime
import json
import os
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fl_deploy import ROOT, provision
from fl_deploy.project import load_project
from tests.unit.test_add_site import provisioned_copy


def cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def tree(folder) -> dict:
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def renew(project, ws, name):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "renew_kit.py"), name, "--project",
                           str(project), "--workspace", str(ws)], capture_output=True, text=True, timeout=120)


def test_renew_kit_signs_a_fresh_kit_for_one_participant_under_the_same_root(tmp_path):
    project, ws = provisioned_copy(tmp_path)
    kits = ws / "kits"
    (kits / "site-1" / "local" / "resources.json").write_text('{"mine": 1}')  # the site's own setting, kept
    others = {n: tree(kits / n) for n in os.listdir(kits) if n != "site-1"}
    old = cert(kits / "site-1" / "startup" / "client.crt")
    old_key = (kits / "site-1" / "startup" / "client.key").read_bytes()
    run = renew(project, ws, "site-1")
    assert run.returncode == 0, run.stderr
    assert "roll it: docker compose up -d --force-recreate site-1" in run.stdout, run.stdout
    assert "(capped at the root CA's expiry" in run.stdout  # NVFlare's defaults: the root ends with the first kits
    new = cert(kits / "site-1" / "startup" / "client.crt")
    root = cert(kits / "fl-server" / "startup" / "rootCA.pem")
    new.verify_directly_issued_by(root)  # signed by the running federation's root CA
    assert (kits / "site-1" / "startup" / "rootCA.pem").read_bytes() == (kits / "fl-server" / "startup" /
                                                                          "rootCA.pem").read_bytes()
    assert new.serial_number != old.serial_number and new.not_valid_before_utc > old.not_valid_before_utc
    assert (kits / "site-1" / "startup" / "client.key").read_bytes() != old_key  # a new key, not a re-dated cert
    assert new.subject == old.subject and new.not_valid_after_utc <= root.not_valid_after_utc
    assert json.loads((kits / "site-1" / "local" / "resources.json").read_text()) == {"mine": 1}
    assert {n: tree(kits / n) for n in os.listdir(kits) if n != "site-1"} == others  # no other kit touched
    # The old kit is moved aside, whole (a running container keeps it until restarted), never edited.
    [replaced] = os.listdir(ws / "kits-replaced")
    assert replaced.startswith("site-1-") and cert(ws / "kits-replaced" / replaced / "startup" / "client.crt") == old
    # NVFlare's state records the new certificate: a later provisioning (add_site) keeps it.
    with open(ws / "provision" / "gpt2-fl" / "state" / "cert.json") as f:
        assert json.load(f)["site-1"]["cert"].encode() == new.public_bytes(Encoding.PEM)


def test_renew_kit_refuses_in_one_line_what_it_cannot_renew(tmp_path):
    project, ws = provisioned_copy(tmp_path)
    run = renew(project, ws, "site-9")
    assert run.returncode == 2 and run.stderr.strip() == (
        f"error: 'site-9' is not a participant of {project} (fl-server, site-1, site-2, admin@fl-demo.org)")
    os.remove(ws / "provision" / "gpt2-fl" / "state" / "cert.json")
    run = renew(project, ws, "site-2")
    err = run.stderr.strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1 and "state/cert.json (the root CA's private key) is " \
        "missing, so site-2's new certificate could not be signed" in err, err
    assert not (ws / "kits-replaced").exists()


def test_under_a_longer_lived_root_renewal_extends_the_certificate(tmp_path):
    """docs/reliability.md's advice: CertBuilder's root_valid_days in project.yml before the first provisioning;
    then a renewed certificate ends 360 days after its renewal, not at the root CA's end."""
    project = tmp_path / "project.yml"
    text = open(os.path.join(ROOT, "project.yml")).read()
    builder = "  - path: nvflare.lighter.impl.cert.CertBuilder\n"
    assert builder in text
    project.write_text(text.replace(builder, builder + "    args: {root_valid_days: 3650}\n"))
    provision.provision(load_project(str(project)), str(tmp_path / "ws"), storage_root=str(tmp_path / "store"),
                        force=False, service_uid=0)
    kit = tmp_path / "ws" / "kits" / "site-1" / "startup"
    old = cert(kit / "client.crt")
    run = renew(project, tmp_path / "ws", "site-1")
    assert run.returncode == 0 and "capped" not in run.stdout, (run.stdout, run.stderr)
    new = cert(kit / "client.crt")
    # A new certificate (its serial), from the renewal's second on: within the provisioning's second the ends are equal.
    assert new.serial_number != old.serial_number and new.not_valid_before_utc >= old.not_valid_before_utc
    assert new.not_valid_after_utc - new.not_valid_before_utc == datetime.timedelta(days=360)
    assert cert(kit / "rootCA.pem").not_valid_after_utc - new.not_valid_after_utc > datetime.timedelta(days=3000)
