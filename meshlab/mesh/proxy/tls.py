"""The sidecar's mutual TLS: contexts built from the workload certificate, and the checks on a peer.

Istio's sidecars authenticate each other with X.509 certificates whose only URI SAN is the workload's SPIFFE
ID ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>`` (https://istio.io/latest/docs/concepts/security/#mutual-tls-
authentication, "secure naming"). A server side (inbound STRICT or PERMISSIVE port) presents its own chain,
requires the client's certificate and verifies the chain against the mesh roots — OpenSSL refuses an expired,
not-yet-valid or foreign-root certificate during the handshake — and then the proxy checks the peer's URI SAN
against the chain's matchers (its trust domain). A client side (outbound to a ``tlsMode: istio`` endpoint)
presents its chain, verifies the server's chain against the roots and its URI SAN against the SPIFFE IDs of
the destination's service accounts; hostnames play no part (``check_hostname`` off, SNI informative).
:class:`WorkloadTls` holds the contexts for the current certificate and is rebuilt on every rotation: new
connections use the new contexts, connections already open keep theirs, so rotation drops no request.
The certificate comes from a provider with the ``CertificateProvider`` interface of
:mod:`meshlab.mesh.citadel.client` (istio-agent's role): ``current()`` and ``subscribe(callback)``.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from meshlab.mesh.proxy.config import StringMatch

log = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a handshake (RFC 8446 §5.1, ContentType 22)


class Certificate(Protocol):
    """The workload certificate as :class:`meshlab.mesh.citadel.client.WorkloadCertificate` carries it."""

    @property
    def key_pem(self) -> bytes: ...
    @property
    def chain_pem(self) -> bytes: ...
    @property
    def roots_pem(self) -> bytes: ...
    @property
    def spiffe_id(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...


class Provider(Protocol):
    """What the proxy needs of a ``CertificateProvider``."""

    def current(self) -> Any: ...
    def subscribe(self, callback: Callable[[Any], None]) -> None: ...


# -- sans-I/O: what a peer certificate says -----------------------------------------------------------------


def uri_sans(peercert: Mapping[str, Any] | None) -> list[str]:
    """The URI subject alternative names of ``SSLSocket.getpeercert()``'s dict."""
    if not peercert:
        return []
    return [str(value) for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]


def peer_problem(peercert: Mapping[str, Any] | None, matchers: Sequence[StringMatch]) -> str | None:
    """Why a verified peer is still refused (None: accepted): no certificate, not exactly one URI SAN, or a
    URI SAN none of ``matchers`` accepts (a foreign trust domain inbound, an unexpected identity outbound)."""
    if not peercert:
        return "the peer presented no certificate"
    sans = uri_sans(peercert)
    if len(sans) != 1:
        return f"the peer certificate has {len(sans)} URI SANs, not exactly one SPIFFE ID"
    if matchers and not any(m.matches(sans[0]) for m in matchers):
        wanted = ", ".join(f"{m.kind.value} {m.value}" for m in matchers)
        trust_domain = sans[0].removeprefix("spiffe://").split("/", 1)[0]
        return f"peer {sans[0]} (trust domain {trust_domain}) does not match {wanted}"
    return None


def handshake_problem(err: BaseException) -> str:
    """A readable reason for a failed handshake, OpenSSL's verify message first (``certificate has expired``,
    ``certificate is not yet valid``, ``unable to get local issuer certificate``...)."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"TLS error: {err.reason or err}"
    return f"{type(err).__name__}: {err}"


def looks_like_tls(first: bytes) -> bool:
    """The ``tls_inspector``'s question, asked of the first byte: is this a TLS handshake?"""
    return first[:1] == bytes([TLS_HANDSHAKE])


# -- contexts -----------------------------------------------------------------------------------------------


def _load_chain(context: ssl.SSLContext, certificate: Certificate) -> None:
    # ssl can only load a key from a file: write it to a private directory, load it, remove it at once.
    with tempfile.TemporaryDirectory(prefix="meshlab-tls-") as directory:
        key, chain = Path(directory) / "key.pem", Path(directory) / "chain.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(certificate.key_pem)
        chain.write_bytes(certificate.chain_pem)
        context.load_cert_chain(chain, key)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificate.roots_pem.decode())
    _load_chain(context, certificate)
    return context


def client_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # SPIFFE identities are checked by URI SAN, not by host name
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificate.roots_pem.decode())
    _load_chain(context, certificate)
    return context


@dataclass
class WorkloadTls:
    """The proxy's current certificate and the server/client contexts made from it."""

    certificate: Any = None
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    rotations: int = 0

    def update(self, certificate: Certificate) -> None:
        """A new certificate (first one or rotation): build both contexts, then swap them in together."""
        server, client = server_context(certificate), client_context(certificate)
        self.certificate, self.server, self.client = certificate, server, client
        self.rotations += 1
        log.info("workload certificate %s: %s valid %s → %s", "loaded" if self.rotations == 1 else "rotated",
                 certificate.spiffe_id, certificate.not_before.isoformat(), certificate.not_after.isoformat())

    def follow(self, provider: Provider) -> None:
        """Take the provider's current certificate and every rotation from now on."""
        current = provider.current()
        if current is not None:
            self.update(current)
        provider.subscribe(self._rotated)

    def _rotated(self, certificate: Certificate) -> None:
        try:
            self.update(certificate)
        except (ssl.SSLError, ValueError, OSError) as err:
            log.error("rotated certificate %s unusable, keeping the previous one: %s",
                      getattr(certificate, "spiffe_id", "?"), err)


def describe(certificate: Certificate | None, pems: Iterable[bytes] = ()) -> dict[str, Any]:
    """``/certs`` as Envoy prints it (``envoy.admin.v3.Certificates``): the chain and the roots, each with
    serial, SANs, validity and days until expiration."""
    from cryptography import x509

    def detail(pem: bytes, now: datetime) -> dict[str, Any]:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [{"uri": u} for u in sans.get_values_for_type(x509.UniformResourceIdentifier)]
            names += [{"dns": d} for d in sans.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        after = cert.not_valid_after_utc
        return {"path": "<inline>", "serial_number": format(cert.serial_number, "x"), "subject_alt_names": names,
                "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
                "days_until_expiration": str(max(0, (after - now).days)),
                "valid_from": cert.not_valid_before_utc.isoformat(), "expiration_time": after.isoformat()}

    if certificate is None:
        return {"certificates": []}
    from datetime import UTC

    now = datetime.now(UTC)
    chain = [detail(p, now) for p in split_pem(certificate.chain_pem)]
    roots = [detail(p, now) for p in split_pem(certificate.roots_pem)]
    return {"certificates": [{"ca_cert": roots, "cert_chain": chain, "spiffe_id": certificate.spiffe_id}]}


def split_pem(bundle: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + end + b"\n" for part in bundle.split(end) if part.strip()]
