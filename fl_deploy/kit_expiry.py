"""When each startup kit works: the validity (notBefore, notAfter) of a participant's certificate and of the root CA
its kit trusts, read from startup/server.crt or client.crt and startup/rootCA.pem.

NVFlare signs the root CA and every participant's certificate for 360 days by default (nvflare.lighter.impl.cert,
DEFAULT_CERT_VALID_DAYS), a participant's never beyond the root's. Outside that window mutual TLS refuses the kit:
after notAfter (renew: scripts/renew_kit.py), or before notBefore, on a host whose clock is behind the provisioning
host's. Used by the containers' start check and healthcheck (docker/kit_check.py: the image copies this file beside
it), scripts/check_host.py and submit_job's preflight: standard library only on a host without `cryptography`
(CPython's own X.509 decoder, the one its ssl tests use), `cryptography` (NVFlare's dependency) where it is installed.
All times are aware UTC datetimes.
"""

import datetime
import json
import os
import ssl
from dataclasses import dataclass

WARN_DAYS = 30  # warn when a certificate of a kit ends within this many days
UTC = datetime.timezone.utc
NTP_FIX = "sync the host's clock (timedatectl set-ntp true, or chrony/ntpd), then restart the container"


@dataclass
class Certificate:
    what: str  # "certificate" (the participant's own) or "root CA"
    subject: str  # the certificate's common name: the participant, or the project for the root CA
    not_before: datetime.datetime
    not_after: datetime.datetime


def read_certificate(path: str, what: str = "certificate") -> Certificate:
    """One PEM certificate's subject CN and validity. Raises OSError / ValueError when it cannot be read."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:  # a host's python3 without it: CPython's decoder, as ssl's own tests use it
        decode = getattr(ssl._ssl, "_test_decode_cert", None)  # private: a later Python may drop it
        if decode is None:
            raise ValueError("this python3 can read no certificate dates (install python3-cryptography)")
        d = decode(path)
        cn = [v for rdn in d.get("subject", ()) for k, v in rdn if k == "commonName"]
        at = [datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(d[k]), UTC) for k in ("notBefore", "notAfter")]
        return Certificate(what, cn[0] if cn else "", *at)
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Certificate(what, cn[0].value if cn else "", cert.not_valid_before_utc, cert.not_valid_after_utc)


def participant_cert_path(kit: str) -> str:
    """The participant's own certificate in a kit: server.crt for the server's kit, else client.crt."""
    startup = os.path.join(kit, "startup")
    return os.path.join(startup, "server.crt" if os.path.isfile(os.path.join(startup, "fed_server.json"))
                        else "client.crt")


def kit_certificates(kit: str) -> list:
    """[the participant's certificate, the root CA] of the kit at ``kit`` (a folder holding startup/)."""
    return [read_certificate(participant_cert_path(kit)),
            read_certificate(os.path.join(kit, "startup", "rootCA.pem"), "root CA")]


def find_kits(kits_dir: str) -> list:
    """The kit folders (holding startup/) directly under ``kits_dir``, sorted; [] when it does not exist."""
    if not os.path.isdir(kits_dir):
        return []
    return [os.path.join(kits_dir, n) for n in sorted(os.listdir(kits_dir))
            if os.path.isdir(os.path.join(kits_dir, n, "startup"))]


def when(t: datetime.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _left(t: datetime.datetime, now: datetime.datetime) -> str:
    days = (t - now).total_seconds() / 86400
    return f"{days:.0f} days left" if days >= 0 else f"expired {-days:.0f} days ago"


def ends_soon(certs: list, now: datetime.datetime) -> bool:
    """Whether a certificate of the kit ends within WARN_DAYS of ``now`` (or has ended)."""
    return any(c.not_after - now < datetime.timedelta(days=WARN_DAYS) for c in certs)


def expiry_line(name: str, certs: list, now: datetime.datetime) -> str:
    """'NAME: certificate until DATE (N days left), root CA until DATE (N days left)', with '; WARNING: ...' when
    one ends within WARN_DAYS."""
    parts = ", ".join(f"{c.what} until {when(c.not_after)} ({_left(c.not_after, now)})" for c in certs)
    soon = min(c.not_after for c in certs) > now and ends_soon(certs, now)
    return f"{name}: {parts}{f'; WARNING: ends within {WARN_DAYS} days' if soon else ''}"


def skew(certs: list, now: datetime.datetime) -> str:
    """How far this clock is behind the latest notBefore, as 'N s (H hours)'; '' when every certificate is valid
    already."""
    ahead = max((c.not_before - now).total_seconds() for c in certs)
    return f"{ahead:.0f} s ({ahead / 3600:.1f} hours)" if ahead > 0 else ""


def renew_fix(name: str) -> str:
    return (f"renew it on the provisioning host (scripts/renew_kit.py {name}), install the new kit where {name} runs "
            f"and restart that one container (docker compose up -d --force-recreate SERVICE)")


def validity_problem(name: str, certs: list, now: datetime.datetime, until: datetime.datetime = None) -> str:
    """One sentence naming the first certificate of the kit that is not valid at ``now`` (or, given ``until``,
    ends before it: a job that would outlive it) and the fix; '' when all are valid."""
    late = skew(certs, now)
    if late:
        c = max(certs, key=lambda c: c.not_before)
        return (f"{name}'s {c.what} is not valid before {c.not_before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, but "
                f"this clock says {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: it is {late} behind the host that "
                f"provisioned the kit; fix: {NTP_FIX}")
    end = max(now, until or now)
    for c in sorted(certs, key=lambda c: c.what != "root CA"):  # an ended root CA first: it needs a new federation
        if c.not_after > end:
            continue
        ended = "expired on" if c.not_after <= now else "expires on"
        if c.what == "root CA":
            return (f"the root CA of {name}'s kit {ended} {when(c.not_after)}: no kit it signed works after that; "
                    "fix: a new root CA, so every kit re-provisioned and every container restarted (docs/"
                    "reliability.md, kit expiry)")
        job = f" before the job can end (about {when(until)})" if c.not_after > now else ""
        return f"{name}'s {c.what} {ended} {when(c.not_after)}{job}; fix: {renew_fix(name)}"
    return ""




def cached_certificates(cache: str):
    """The certificate dates check_kit kept in ``cache``; None when not there."""
    try:
        with open(cache) as f:
            return [Certificate(c["what"], c["subject"], *(datetime.datetime.fromisoformat(c[k])
                                                           for k in ("not_before", "not_after"))) for c in json.load(f)]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_kit(kit: str, now: datetime.datetime = None, cache: str = None, refresh: bool = True) -> tuple:
    """(the kit's expiry_line, its validity_problem at ``now``, '' when valid). The dates are read from the kit and
    kept in ``cache`` (refresh: a container's start check), or taken from ``cache`` when there (its healthcheck,
    every 5 s: no certificate parsing). A kit without readable certificates: (why, '') -- NVFlare's own start
    names that fault."""
    now = now or datetime.datetime.now(UTC)
    certs = None if refresh or not cache else cached_certificates(cache)
    if certs is None:
        try:
            certs = kit_certificates(kit)
        except (OSError, ValueError) as e:
            return f"cannot read the kit's certificates ({e})", ""
        try:
            if cache:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                with open(cache, "w") as f:
                    json.dump([dict(vars(c), not_before=c.not_before.isoformat(), not_after=c.not_after.isoformat())
                               for c in certs], f)
        except OSError:
            pass  # no writable workspace (the admin console): each check reads the kit
    name = certs[0].subject or os.path.basename(kit)
    return expiry_line(name, certs, now), validity_problem(name, certs, now)

@dataclass
class Report:
    lines: list  # one expiry_line per kit
    soon: list  # the lines of kits ending within WARN_DAYS
    problems: list  # one validity_problem sentence per kit that is not valid (or ends before the job)
    first_end: tuple = None  # (kit name, datetime) of the earliest notAfter


def report(kits_dir: str, now: datetime.datetime = None, until: datetime.datetime = None, names: list = None) -> Report:
    """The kits under ``kits_dir`` (only ``names`` when given) at ``now``; a problem also where a certificate ends
    before ``until``. A kit whose certificates this user cannot read gets a line saying so, no problem."""
    now = now or datetime.datetime.now(UTC)
    r = Report([], [], [])
    for kit in find_kits(kits_dir):
        name = os.path.basename(kit)
        if names is not None and name not in names:
            continue
        try:
            certs = kit_certificates(kit)
        except (OSError, ValueError) as e:  # e.g. a kit only its service user may read: said, not a refusal
            r.lines.append(f"{name}: its certificates cannot be read here ({e}), so their dates are not known")
            continue
        r.lines.append(expiry_line(name, certs, now))
        if ends_soon(certs, now):
            r.soon.append(r.lines[-1])
        problem = validity_problem(name, certs, now, until)
        if problem:
            r.problems.append(problem)
        end = min(c.not_after for c in certs)
        if r.first_end is None or end < r.first_end[1]:
            r.first_end = (name, end)
    return r
