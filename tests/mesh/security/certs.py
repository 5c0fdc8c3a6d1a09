"""Certificates for the security tests, made with ``cryptography``: a mesh root, workload leaves with one
SPIFFE URI SAN (as Citadel issues them), and the bad ones a proxy must refuse (expired, not yet valid, another
trust domain, another root). :class:`StaticProvider` has the ``CertificateProvider`` surface the proxy uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class WorkloadCertificate:
    """The shape of ``meshlab.mesh.citadel.client.WorkloadCertificate``."""

    key_pem: bytes
    chain_pem: bytes
    roots_pem: bytes
    spiffe_id: str
    not_before: datetime
    not_after: datetime


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Authority:
    """A self-signed ECDSA P-256 root that issues workload certificates."""

    name: str = "meshlab test root"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        assert self.cert is not None
        return _pem(self.cert)

    def issue(self, spiffe_id: str, *, not_before: datetime | None = None, not_after: datetime | None = None,
              roots_pem: bytes | None = None) -> WorkloadCertificate:
        assert self.cert is not None
        now = datetime.now(UTC)
        start = not_before or now - timedelta(minutes=5)
        end = not_after or now + timedelta(hours=24)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                               critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return WorkloadCertificate(key_pem, _pem(cert) + self.pem, roots_pem or self.pem, spiffe_id, start, end)


def spiffe(namespace: str, account: str, trust_domain: str = "cluster.local") -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{account}"


@dataclass
class StaticProvider:
    """An in-memory ``CertificateProvider``: ``rotate`` hands subscribers a new certificate."""

    certificate: WorkloadCertificate | None
    callbacks: list[Callable[[WorkloadCertificate], None]] = field(default_factory=list)

    def current(self) -> WorkloadCertificate | None:
        return self.certificate

    def subscribe(self, callback: Callable[[WorkloadCertificate], None]) -> None:
        self.callbacks.append(callback)

    def rotate(self, certificate: WorkloadCertificate) -> None:
        self.certificate = certificate
        for callback in self.callbacks:
            callback(certificate)
