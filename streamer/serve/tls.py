"""HTTPS and WSS: the server's TLS context, and a self-signed certificate for a LAN.

Browsers let a page use the camera (``getUserMedia``) only in a secure context: https, or
loopback. A phone on the LAN sending its camera therefore needs the server on https. With a real
certificate (``--tls-cert``/``--tls-key``) the server uses it as is; ``--tls-self-signed`` makes
one with ``cryptography`` for every name and address of this machine, keeps it in the cache
(``tls/`` beside the checkpoints) and reuses it while it is valid and covers the names asked for,
so a phone that accepted it once keeps accepting it. Its SHA-256 fingerprint is printed, for
comparing with what the phone's browser shows before trusting it.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import ifaddr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import StreamerError
from ..model.weights import cache_dir

VALID_DAYS = 825  # the longest validity Apple's platforms accept for a TLS server certificate
RENEW_DAYS = 30  # made anew when it would expire within this many days


class TlsError(StreamerError):
    """A certificate or key that cannot be used."""

    code = "tls"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as browsers show it (``AB:CD:...``)."""
        return fingerprint(self.cert)


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS server context for ``cert`` (PEM, with its chain) and ``key``; a TlsError says what
    is wrong with them."""
    for kind, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TlsError(f"TLS {kind} {path} does not exist: pass the PEM file, or --tls-self-signed")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or exc
        raise TlsError(f"cannot use TLS certificate {cert} with key {key}: {reason} (do they match?)") from None
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read TLS certificate {cert} or key {key}: {exc}") from None
    return context


def fingerprint(cert: str | Path) -> str:
    certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def local_names(host: str) -> list[str]:
    """The names a certificate for a server on ``host`` should cover: ``host`` itself (unless it
    is a wildcard address), localhost, this machine's name and every address of its interfaces."""
    names = ["localhost", socket.gethostname()]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    for adapter in ifaddr.get_adapters():
        for address in adapter.ips:
            ip = address.ip if isinstance(address.ip, str) else address.ip[0]
            if "%" not in ip:  # link-local IPv6 with a scope: not usable in a URL
                names.append(ip)
    return list(dict.fromkeys(names))


def self_signed(names: list[str], folder: Path | None = None) -> Certificate:
    """A self-signed certificate covering ``names`` (host names and IP addresses): the cached
    one if it is still valid for a while and covers them, else a new one (then cached)."""
    folder = folder or cache_dir() / "tls"
    found = Certificate(folder / "self-signed.pem", folder / "self-signed.key")
    if _reusable(found, names):
        return found
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sam2-stream on {socket.gethostname()}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    found.key.touch(mode=0o600)
    found.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    found.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return found


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _reusable(found: Certificate, names: list[str]) -> bool:
    if not (found.cert.is_file() and found.key.is_file()):
        return False
    try:
        certificate = x509.load_pem_x509_certificate(found.cert.read_bytes())
        covered = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    renew = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=RENEW_DAYS)
    return certificate.not_valid_after_utc > renew and all(_general_name(n) in covered for n in names)


__all__ = ["Certificate", "TlsError", "fingerprint", "local_names", "self_signed", "server_context"]
