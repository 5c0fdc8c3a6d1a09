"""The embedded lab's own PKI: a per-lab CA, the apiserver's serving certificate, and signed tokens.

Each lab gets a fresh ECDSA P-256 CA under ``<state>/pki/``; the apiserver's certificate is issued by it for
``127.0.0.1``, ``localhost`` and ``kubernetes.default.svc``. Service-account tokens are JWTs signed with ES256
by a separate key, as a real cluster's ``--service-account-signing-key-file`` does, so TokenRequest and
TokenReview work and a pod can prove who it is. Private keys are written with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from meshlab.errors import Unauthorized

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@dataclass
class LabPki:
    """Paths of one lab's PKI material (created by :func:`ensure_pki`)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def admin_token(self) -> Path:
        return self.directory / "admin.token"

    def read_admin_token(self) -> str:
        return self.admin_token.read_text().strip()


def ensure_pki(directory: Path) -> LabPki:
    """Create the lab's CA, serving certificate, token signing key and admin token if missing."""
    pki = LabPki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    if not pki.ca_cert.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshlab-lab-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(pki.ca_key, _key_pem(ca_key))
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        for stale in (pki.serving_cert, pki.serving_key):
            stale.unlink(missing_ok=True)
    if not pki.serving_cert.exists():
        ca_key = _load_key(pki.ca_key)
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(pki.serving_key, _key_pem(key))
        pki.serving_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not pki.sa_key.exists():
        _write_private(pki.sa_key, _key_pem(ec.generate_private_key(ec.SECP256R1())))
    if not pki.admin_token.exists():
        _write_private(pki.admin_token, secrets.token_urlsafe(32).encode())
    return pki


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies service-account JWTs (ES256), like kube-apiserver's token signer."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = _b64url(hashlib.sha256(public).digest())

    @classmethod
    def from_file(cls, path: Path) -> TokenSigner:
        return cls(_load_key(path))

    def issue(
        self,
        *,
        namespace: str,
        service_account: str,
        sa_uid: str,
        audiences: list[str] | None = None,
        expiration_seconds: int = 3600,
        pod: tuple[str, str] | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A signed token and its expiry (unix seconds)."""
        issued = int(now if now is not None else time.time())
        exp = issued + expiration_seconds
        k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": sa_uid},
        }
        if pod:
            k8s["pod"] = {"name": pod[0], "uid": pod[1]}
        claims = {
            "aud": audiences or [AUDIENCE],
            "exp": exp,
            "iat": issued,
            "nbf": issued,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": k8s,
        }
        header = {"alg": "ES256", "kid": self.key_id, "typ": "JWT"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}", exp

    def verify(self, token: str, *, audiences: list[str] | None = None, now: float | None = None) -> dict[str, Any]:
        """The token's claims, or :class:`Unauthorized` saying why it is not acceptable."""
        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            header = json.loads(_unb64url(head_b64))
            claims = json.loads(_unb64url(body_b64))
            sig = _unb64url(sig_b64)
        except ValueError as err:
            raise Unauthorized("invalid bearer token: not a JWT") from err
        if header.get("alg") != "ES256" or len(sig) != 64:
            raise Unauthorized("invalid bearer token: unexpected signing algorithm")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self._key.public_key().verify(der, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as err:
            raise Unauthorized("invalid bearer token: signature does not verify") from err
        current = now if now is not None else time.time()
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            raise Unauthorized("invalid bearer token: wrong issuer")
        if float(claims.get("exp", 0)) < current:
            raise Unauthorized("invalid bearer token: token has expired")
        wanted = audiences or [AUDIENCE]
        if not set(wanted) & set(claims.get("aud") or []):
            raise Unauthorized("invalid bearer token: token audiences do not match")
        return claims
