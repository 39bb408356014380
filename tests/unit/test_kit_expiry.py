"""Issue 24 cases 1, 2: a kit's certificate dates, read with a shifted clock instead of waiting a year.

Kits of short validity are made here with `cryptography` (a root CA and a participant certificate, as NVFlare's
CertBuilder makes them); the container's start check (docker/kit_check.py validity) runs against them as a process,
with this machine's real clock."""

import datetime
import importlib.util
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from fl_deploy import kit_expiry
from fl_deploy.harness import local_federation

SCRIPT = os.path.join(local_federation.ROOT, "docker", "kit_check.py")
UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def fresh_now(monkeypatch):
    """NOW as each test starts: in a full suite the module is collected long before its tests run (40 min in CI)."""
    monkeypatch.setattr(sys.modules[__name__], "NOW", datetime.datetime.now(UTC).replace(microsecond=0))


def _cert(name, key, issuer_name, issuer_key, start, end, ca=False):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_kit(folder, name="site-1", start=None, days=360.0, root_days=360.0, server=False, root=None):
    """A kit folder (startup/ with the participant's certificate, key and rootCA.pem) valid from ``start``
    (default now) for ``days``; the root CA (``root``: (certificate, key) of another kit's, else a new one from the
    same start for ``root_days``) in make_kit.root."""
    start = start or NOW
    if root is None:
        root_key = _key()
        root = _cert("gpt2-fl", root_key, None, root_key, start, start + datetime.timedelta(days=root_days), ca=True), \
            root_key
    make_kit.root = root
    key = _key()
    cert = _cert(name, key, root[0].subject, root[1], start, start + datetime.timedelta(days=days))
    startup = folder / name / "startup"
    startup.mkdir(parents=True)
    base = "server" if server else "client"
    (startup / "rootCA.pem").write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    (startup / f"{base}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (startup / f"{base}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                                            serialization.NoEncryption()))
    (startup / ("fed_server.json" if server else "fed_client.json")).write_text("{}")
    return folder / name


def test_both_decoders_read_the_same_dates(tmp_path, monkeypatch):
    """A host's python3 without `cryptography` decodes with CPython's own decoder: the same dates and name."""
    kit = make_kit(tmp_path, days=0.5)
    with_cryptography = kit_expiry.kit_certificates(str(kit))
    monkeypatch.setitem(sys.modules, "cryptography", None)  # `import cryptography` now raises ImportError
    assert kit_expiry.kit_certificates(str(kit)) == with_cryptography
    assert with_cryptography[0].subject == "site-1" and with_cryptography[0].not_after == NOW + datetime.timedelta(hours=12)


def test_expiry_line_warns_within_30_days_at_a_shifted_now(tmp_path):
    certs = kit_expiry.kit_certificates(str(make_kit(tmp_path, days=360)))
    line = kit_expiry.expiry_line("site-1", certs, NOW)
    assert line.startswith("site-1: certificate until ") and "(360 days left)" in line and "WARNING" not in line
    later = kit_expiry.expiry_line("site-1", certs, NOW + datetime.timedelta(days=340))
    assert "(20 days left)" in later and later.endswith("; WARNING: ends within 30 days"), later
    gone = kit_expiry.expiry_line("site-1", certs, NOW + datetime.timedelta(days=365))
    assert "(expired 5 days ago)" in gone


def test_an_expired_certificate_names_the_participant_the_date_and_renew_kit(tmp_path):
    certs = kit_expiry.kit_certificates(str(make_kit(tmp_path, days=10, root_days=720)))
    assert kit_expiry.validity_problem("site-1", certs, NOW + datetime.timedelta(days=9)) == ""
    end = kit_expiry.when(NOW + datetime.timedelta(days=10))
    problem = kit_expiry.validity_problem("site-1", certs, NOW + datetime.timedelta(days=11))
    assert problem.startswith(f"site-1's certificate expired on {end}; fix: renew it on the provisioning host "
                              "(scripts/renew_kit.py site-1)"), problem
    # A job whose end falls after the expiry: refused before it starts, with the job's estimated end.
    job_end = NOW + datetime.timedelta(days=12)
    problem = kit_expiry.validity_problem("site-1", certs, NOW + datetime.timedelta(days=9), until=job_end)
    assert problem.startswith(f"site-1's certificate expires on {end} before the job can end (about "
                              f"{kit_expiry.when(job_end)})"), problem


def test_an_expired_root_ca_says_every_kit_must_be_reprovisioned(tmp_path):
    certs = kit_expiry.kit_certificates(str(make_kit(tmp_path, days=10, root_days=10)))
    problem = kit_expiry.validity_problem("site-1", certs, NOW + datetime.timedelta(days=11))
    assert problem.startswith("the root CA of site-1's kit expired on ") and "every kit re-provisioned" in problem


def run_check(kit, *args):
    env = dict(os.environ, FL_KIT=str(kit), FL_WORKSPACE=str(kit.parent / "ws"))
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_host_clock_behind_the_provisioning_host_is_named_with_the_skew_and_the_fix(tmp_path):
    """Case 2: a kit provisioned on a host whose clock is 2 hours ahead of this one (the kit's notBefore is 2 hours
    in this clock's future): the start check stops the container with the skew and the NTP fix, in one sentence."""
    # This test's own now: NOW is taken when the module is collected, which is long before it runs in a full suite.
    start = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(hours=2)
    kit = make_kit(tmp_path, start=start)
    run = run_check(kit, "validity", "site")
    err = run.stderr.strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1, (run.stdout, err)
    assert err.startswith(f"error: site-1's certificate is not valid before {start:%Y-%m-%d %H:%M:%S} UTC, but "
                          "this clock says "), err
    skew_s = float(err.split("it is ")[1].split(" s (")[0])
    assert 7000 < skew_s <= 7200 and "(2.0 hours) behind the host that provisioned the kit" in err, err
    assert "fix: sync the host's clock (timedatectl set-ntp true, or chrony/ntpd)" in err


def test_the_start_check_and_the_health_output_show_the_kits_expiry(tmp_path):
    kit = make_kit(tmp_path, name="fl-server", days=20, root_days=720, server=True)
    run = run_check(kit, "validity", "server")
    assert run.returncode == 0 and run.stdout.startswith("fl-kit-check: fl-server: certificate until "), run
    assert "(20 days left), root CA until" in run.stdout and "WARNING: ends within 30 days" in run.stdout
    # The healthcheck's own function, at a faked now past the certificate's end.
    spec = importlib.util.spec_from_file_location("kit_check", SCRIPT)
    kc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kc)
    cache = str(tmp_path / "ws" / "tmp" / "kit_dates.json")  # what the start check above wrote
    line, problem = kc.kit_validity(NOW + datetime.timedelta(days=21), kit=str(kit), cache=cache, refresh=False)
    assert "(expired 1 days ago)" in line and problem.startswith("fl-server's certificate expired on "), problem
    # The healthcheck takes the dates the start check kept, without parsing the certificates every 5 s.
    (kit / "startup" / "server.crt").unlink()
    assert kc.kit_validity(NOW, kit=str(kit), cache=cache, refresh=False)[0] == run.stdout.strip()[len("fl-kit-check: "):]


def test_a_kit_without_certificates_is_left_to_nvflare(tmp_path):
    kit = make_kit(tmp_path)
    (kit / "startup" / "client.crt").unlink()
    run = run_check(kit, "validity", "site")
    assert run.returncode == 0 and "cannot read the kit's certificates" in run.stdout


def test_check_host_prints_one_line_per_kit_and_stops_on_an_expired_one(tmp_path, capsys):
    from fl_deploy import check_host
    from fl_deploy.host import HostError

    make_kit(tmp_path, name="fl-server", days=400, root_days=400, server=True)
    make_kit(tmp_path, name="site-1", days=20, root_days=400)
    check_host.check_kit_expiry(str(tmp_path), now=NOW)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["kit fl-server", "kit site-1"], out
    assert out[1].endswith("WARNING: ends within 30 days") and "WARNING" not in out[0]
    with pytest.raises(HostError, match=r"^site-1's certificate expired on .*scripts/renew_kit.py site-1"):
        check_host.check_kit_expiry(str(tmp_path), now=NOW + datetime.timedelta(days=21))
    (tmp_path / "site-1" / "startup" / "client.crt").write_text("not a certificate")  # or unreadable to this user
    check_host.check_kit_expiry(str(tmp_path), now=NOW)
    assert "kit site-1: its certificates cannot be read here (" in capsys.readouterr().out


def test_preflight_warns_within_30_days_and_refuses_a_job_that_would_outlive_a_certificate(tmp_path, capsys):
    from fl_deploy.host import HostError
    from fl_deploy.submit_job.preflight import require_valid_kits

    make_kit(tmp_path, name="fl-server", days=400, root_days=400, server=True)
    make_kit(tmp_path, name="site-1", days=20, root_days=400)
    make_kit(tmp_path, name="site-2", days=5, root_days=400)  # not in the job: neither warned about nor refused
    lines = require_valid_kits(["site-1"], rounds=3, round_s=60.0, kits_dir=str(tmp_path), now=NOW)
    assert [line.split(":")[0] for line in lines] == ["fl-server", "site-1"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("warning: kit site-1: certificate until ") and "site-2" not in "".join(out), out
    assert out[1] == f"kits: 2 valid until {kit_expiry.when(NOW + datetime.timedelta(days=20))} at least (the first " \
        "to end: site-1's)"
    # 10 rounds of 60 s from 5 minutes before site-1's certificate ends: the job cannot end in time.
    start = NOW + datetime.timedelta(days=20, minutes=-5)
    with pytest.raises(HostError) as refused:
        require_valid_kits(["site-1"], rounds=10, round_s=60.0, kits_dir=str(tmp_path), now=start)
    assert str(refused.value) == (
        f"site-1's certificate expires on {kit_expiry.when(NOW + datetime.timedelta(days=20))} before the job can end "
        f"(about {kit_expiry.when(start + datetime.timedelta(minutes=10))}); fix: {kit_expiry.renew_fix('site-1')} "
        "(nothing was submitted)")
    # No prediction (a --job-folder, a hub model): the round's measured fixed latency (sizing_slopes.json's
    # intercept) bounds the end.
    require_valid_kits(["site-1"], rounds=10, round_s=None, kits_dir=str(tmp_path), now=start)


def test_check_job_reports_the_rounds_the_preflight_estimates_the_job_from(tmp_path):
    import json
    import shutil

    from fl_deploy.check_job import check_job

    job = tmp_path / "job"
    shutil.copytree(os.path.join(local_federation.ROOT, "jobs", "gpt2-fedavg-stream"), job)
    config = job / "app_server" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["workflows"][0]["args"]["num_rounds"] = 7
    config.write_text(json.dumps(server))
    needs, problems = check_job(str(job))
    assert not problems and needs["rounds"] == 7


def test_a_site_reaching_a_server_whose_certificate_expired_is_told_so_not_another_federation(tmp_path):
    """Before: an expired server certificate read 'something answers there but not this federation's server'. The
    handshake of the kit-clock slow case, here with a server certificate that ended 40 days ago."""
    from fl_deploy.harness.slow_kit_clock import HANDSHAKE

    server = make_kit(tmp_path, name="fl-server", start=NOW - datetime.timedelta(days=400), days=360,
                      root_days=800, server=True)
    site = make_kit(tmp_path, name="site-1", root=make_kit.root)
    code = HANDSHAKE.format(script=SCRIPT, server=str(server / "startup"))
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FL_KIT=str(site)), capture_output=True,
                         text=True, timeout=60)
    assert run.stdout.startswith("the server's certificate chain is out of date by this container's clock "
                                 "(certificate has expired); fix: if it expired, renew the server's kit"), run
    fresh = make_kit(tmp_path / "fresh", name="fl-server", server=True, root=make_kit.root)
    code = HANDSHAKE.format(script=SCRIPT, server=str(fresh / "startup"))
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FL_KIT=str(site)), capture_output=True,
                         text=True, timeout=60)
    assert run.stdout.strip() == "handshake accepted", run
