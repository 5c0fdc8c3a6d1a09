"""The certificate authority at the heart of Citadel, without I/O: keys, a root, signing CSRs, rotating roots.

Istio's CA (``security/pkg/pki/ca``) either generates a self-signed root (10 years, kept in the Secret
``istio-system/istio-ca-secret``) or takes a *plug-in* CA from the Secret ``cacerts`` — ``ca-cert.pem`` and
``ca-key.pem`` (the intermediate that signs), ``cert-chain.pem`` (that intermediate up to the root) and
``root-cert.pem`` (the trust anchor(s)) — so several clusters can share one root. Every workload certificate
is an X.509 v3 end-entity certificate (RFC 5280) whose *only* subject alternative name is the URI
``spiffe://<trust-domain>/ns/<ns>/sa/<sa>`` (SPIFFE X509-SVID, https://github.com/spiffe/spiffe
``standards/X509-SVID.md``: empty subject, so the SAN is critical; not a CA; digitalSignature (and
keyEncipherment for RSA); serverAuth + clientAuth, since a sidecar is both). The identity comes from the
caller's *authenticated* token, never from the CSR: the CSR only proves possession of the key it carries (its
signature is checked). A certificate never outlives the CA that signed it, and its ``notBefore`` is backdated a
minute so a peer whose clock runs slightly behind accepts it. A root rotation issues from a new root while the
trust bundle holds old and new, until every certificate from the old root has expired.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlab.errors import CaError
from meshlab.mesh.citadel.identity import WorkloadIdentity

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]  # noqa: UP007 (a runtime alias)

ROOT_VALIDITY = dt.timedelta(days=3650)  # Istio's self-signed root: 10 years
DEFAULT_WORKLOAD_TTL = dt.timedelta(hours=24)  # istio-agent's SECRET_TTL
MAX_WORKLOAD_TTL = dt.timedelta(days=90)  # istiod's MAX_WORKLOAD_CERT_TTL
BACKDATE = dt.timedelta(minutes=1)  # tolerate a peer's clock running behind ours
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)

# Istio's plug-in CA files (Secret "cacerts", or the self-signed "istio-ca-secret").
CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT = "ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"


class KeyAlgorithm(enum.Enum):
    ECDSA_P256 = "ECDSA_P256"
    RSA_2048 = "RSA_2048"


def generate_key(algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256) -> PrivateKey:
    if algorithm is KeyAlgorithm.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificates_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certificates(pem: bytes | str, what: str = "certificate") -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    if not data.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise CaError(f"{what} is not PEM X.509: {err}") from err


def build_csr(key: PrivateKey, *, uris: Sequence[str] = ()) -> bytes:
    """A PEM PKCS#10 request for ``key`` (istio-agent puts its SPIFFE ID in it; Citadel decides anyway)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def self_signed_root(trust_domain: str, *, key: PrivateKey, validity: dt.timedelta = ROOT_VALIDITY,
                     now: dt.datetime | None = None) -> x509.Certificate:
    """A root CA certificate for ``key``, named after the trust domain as Istio names its self-signed root."""
    start = _now(now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # The key id in the name keeps an old and a new root apart during a rotation (path building goes by name).
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"meshlab Citadel root CA {ski.digest.hex()[:8]}")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - BACKDATE).not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))


def _public_key_bytes(cert_or_key: x509.Certificate | PrivateKey) -> bytes:
    public = cert_or_key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_issued_by(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise CaError(f"{what}: {child.subject.rfc4514_string()} is not signed by "
                      f"{parent.subject.rfc4514_string()}") from err


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True)
class IssuedCertificate:
    """What :meth:`CertificateAuthority.sign_csr` returns: the chain (leaf first, root last) and what was asked."""

    chain: tuple[x509.Certificate, ...]
    identity: WorkloadIdentity
    requested_uris: tuple[str, ...]  # the URI SANs the CSR asked for (ignored; logged when they differ)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def chain_pem(self) -> bytes:
        return certificates_pem(self.chain)

    @property
    def cert_chain(self) -> list[str]:
        """One PEM string per certificate, as ``IstioCertificateResponse.cert_chain`` carries them."""
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in self.chain]

    @property
    def forged(self) -> bool:
        """True when the CSR asked for an identity other than the caller's."""
        return any(uri != self.identity.spiffe_id for uri in self.requested_uris)


@dataclass(frozen=True, repr=False)
class CertificateAuthority:
    """A signing certificate and key, the certificates above it up to its root, and the trusted roots.

    ``chain`` runs from the signing certificate's issuer to the root (empty when the signing certificate is the
    root itself, as with a self-signed CA); ``trusted_roots`` is the bundle workloads verify peers with — the
    issuing root, plus the previous root while a rotation's overlap lasts (``overlap_until``).
    """

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    trusted_roots: tuple[x509.Certificate, ...] = ()
    self_signed: bool = False
    overlap_until: dt.datetime | None = None
    algorithm: KeyAlgorithm = field(default=KeyAlgorithm.ECDSA_P256)

    def __repr__(self) -> str:  # never print the key
        kind = "self-signed" if self.self_signed else "plug-in"
        return (f"CertificateAuthority({kind}, {self.certificate.subject.rfc4514_string()!r}, "
                f"roots={len(self.trusted_roots)}, until {self.not_after:%Y-%m-%d})")

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def create_self_signed(cls, trust_domain: str, *, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
                           validity: dt.timedelta = ROOT_VALIDITY, now: dt.datetime | None = None
                           ) -> CertificateAuthority:
        key = generate_key(algorithm)
        root = self_signed_root(trust_domain, key=key, validity=validity, now=now)
        return cls(key=key, certificate=root, trusted_roots=(root,), self_signed=True, algorithm=algorithm)

    @classmethod
    def from_pem(cls, *, ca_cert: bytes, ca_key: bytes, cert_chain: bytes = b"", root_cert: bytes = b""
                 ) -> CertificateAuthority:
        """A CA from Istio's four files: checks that the key is the certificate's, that it is a CA, and that
        each certificate up the chain signed the one below, ending at a trusted root."""
        certs = load_certificates(ca_cert, CA_CERT)
        if len(certs) != 1:
            raise CaError(f"{CA_CERT} must hold exactly one certificate, not {len(certs)}")
        certificate = certs[0]
        try:
            key = serialization.load_pem_private_key(ca_key, password=None)
        except (ValueError, TypeError) as err:
            raise CaError(f"{CA_KEY} is not an unencrypted PEM private key") from err
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CaError(f"{CA_KEY}: only ECDSA and RSA keys are supported")
        if _public_key_bytes(key) != _public_key_bytes(certificate):
            raise CaError(f"{CA_KEY} does not belong to {CA_CERT}")
        if not _is_ca(certificate):
            raise CaError(f"{CA_CERT} is not a CA certificate (basicConstraints CA:TRUE missing)")
        roots = load_certificates(root_cert, ROOT_CERT)
        chain = [c for c in load_certificates(cert_chain, CERT_CHAIN) if c != certificate]
        self_signed = certificate.issuer == certificate.subject and not chain
        if self_signed:
            _check_issued_by(certificate, certificate, CA_CERT)
            roots = roots or [certificate]
        if not roots:
            raise CaError(f"{ROOT_CERT} is empty: the trust anchor is needed to build workload chains")
        below = certificate
        for parent in chain:
            _check_issued_by(below, parent, CERT_CHAIN)
            below = parent
        if below.issuer != below.subject:  # the chain stops short of its root: take it from the trust bundle
            issuer = next((r for r in roots if r.subject == below.issuer), None)
            if issuer is None:
                raise CaError(f"no root in {ROOT_CERT} issued {below.subject.rfc4514_string()}")
            _check_issued_by(below, issuer, ROOT_CERT)
            chain.append(issuer)
        elif below not in roots:
            raise CaError(f"the chain ends at {below.subject.rfc4514_string()}, which {ROOT_CERT} does not hold")
        algorithm = KeyAlgorithm.RSA_2048 if isinstance(key, rsa.RSAPrivateKey) else KeyAlgorithm.ECDSA_P256
        return cls(key=key, certificate=certificate, chain=tuple(chain), trusted_roots=tuple(roots),
                   self_signed=self_signed, algorithm=algorithm)

    def secret_data(self) -> dict[str, bytes]:
        """The four files of Istio's CA Secret — the only place the CA key is written."""
        return {CA_CERT: certificates_pem([self.certificate]), CA_KEY: private_key_pem(self.key),
                CERT_CHAIN: certificates_pem(self.chain), ROOT_CERT: self.roots_pem}

    # -- views ----------------------------------------------------------------------------------------------

    @property
    def root(self) -> x509.Certificate:
        """The root this CA's certificates chain up to."""
        return self.chain[-1] if self.chain else self.certificate

    @property
    def roots_pem(self) -> bytes:
        """The trust bundle (what ConfigMap ``istio-ca-root-cert`` publishes as ``root-cert.pem``)."""
        return certificates_pem(self.trusted_roots)

    @property
    def not_after(self) -> dt.datetime:
        return min(c.not_valid_after_utc for c in (self.certificate, *self.chain))

    # -- issuing --------------------------------------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes | str, identity: WorkloadIdentity, ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL,
                 *, now: dt.datetime | None = None, max_ttl: dt.timedelta = MAX_WORKLOAD_TTL) -> IssuedCertificate:
        """Sign the key in ``csr_pem`` for ``identity`` — the authenticated caller, whatever the CSR asks — for
        ``ttl`` (capped by ``max_ttl`` and by this CA's own expiry). ``CaError`` if the CSR is unusable."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as err:
            raise CaError(f"the CSR is not a PEM PKCS#10 request: {err}") from err
        if not csr.is_signature_valid:
            raise CaError("the CSR's signature does not verify: the caller does not hold the key it asks to certify")
        public = csr.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            if not isinstance(public.curve, ACCEPTED_CURVES):
                raise CaError(f"the CSR's EC curve {public.curve.name} is not accepted (P-256 or P-384)")
        elif isinstance(public, rsa.RSAPublicKey):
            if public.key_size < MIN_RSA_BITS:
                raise CaError(f"the CSR's RSA key has {public.key_size} bits; at least {MIN_RSA_BITS} are required")
        else:
            raise CaError("the CSR's key must be ECDSA or RSA")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            requested = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            requested = ()
        start = _now(now)
        if self.not_after <= start:
            raise CaError(f"the CA certificate expired at {self.not_after:%Y-%m-%dT%H:%M:%SZ}")
        if ttl <= dt.timedelta(0):
            ttl = DEFAULT_WORKLOAD_TTL
        end = min(start + min(ttl, max_ttl), self.not_after)
        builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.certificate.subject)
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(max(start - BACKDATE, self.certificate.not_valid_before_utc))
                   .not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(ca=False, key_encipherment=isinstance(public, rsa.RSAPublicKey)),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.UniformResourceIdentifier(identity.spiffe_id)]), critical=True))
        leaf = self._sign(builder, public)
        return IssuedCertificate(chain=(leaf, *self._issuer_chain()), identity=identity, requested_uris=requested)

    def issue_server_certificate(self, dns_names: Sequence[str], ips: Sequence[str] = (), *,
                                 ttl: dt.timedelta = dt.timedelta(days=365), now: dt.datetime | None = None,
                                 ) -> tuple[PrivateKey, tuple[x509.Certificate, ...]]:
        """A fresh key and a serving certificate (chain, leaf first) for Citadel's own gRPC port."""
        start = _now(now)
        key = generate_key(KeyAlgorithm.ECDSA_P256)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]) if dns_names else x509.Name([])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(max(start - BACKDATE, self.certificate.not_valid_before_utc))
                   .not_valid_after(min(start + ttl, self.not_after))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(ca=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.SubjectAlternativeName(sans), critical=not dns_names))
        return key, (self._sign(builder, key.public_key()), *self._issuer_chain())

    def issue_intermediate(self, common_name: str, *, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
                           validity: dt.timedelta = dt.timedelta(days=365), now: dt.datetime | None = None
                           ) -> CertificateAuthority:
        """A subordinate CA this one signs — how an operator makes a cluster's ``cacerts`` from a shared root
        (Istio's "Plug in CA certificates" task); ``secret_data()`` of the result is that Secret's content."""
        start = _now(now)
        key = generate_key(algorithm)
        name = x509.Name([*self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(self.certificate.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(max(start - BACKDATE, self.certificate.not_valid_before_utc))
                   .not_valid_after(min(start + validity, self.not_after))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(_key_usage(ca=True), critical=True))
        certificate = self._sign(builder, key.public_key())
        return CertificateAuthority(key=key, certificate=certificate, chain=self._issuer_chain(),
                                    trusted_roots=self.trusted_roots, self_signed=False, algorithm=algorithm)

    def _issuer_chain(self) -> tuple[x509.Certificate, ...]:
        return (self.certificate, *self.chain)

    def _sign(self, builder: x509.CertificateBuilder, public: CertificatePublicKeyTypes) -> x509.Certificate:
        issuer_public = self.key.public_key()  # the issuer's key: its identifier links the chain (RFC 5280 4.2.1.1)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public),
                                        critical=False)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    # -- rotating the root ----------------------------------------------------------------------------------

    def rotate_root(self, trust_domain: str, *, overlap: dt.timedelta, validity: dt.timedelta = ROOT_VALIDITY,
                    now: dt.datetime | None = None) -> CertificateAuthority:
        """A self-signed CA with a new key and root; its trust bundle keeps the current roots for ``overlap``
        (at least the longest workload TTL, so every certificate the old root signed expires in the overlap)."""
        if not self.self_signed:
            raise CaError("a plug-in CA is rotated by replacing the cacerts Secret, not by Citadel")
        start = _now(now)
        key = generate_key(self.algorithm)
        root = self_signed_root(trust_domain, key=key, validity=validity, now=start)
        old = tuple(r for r in self.trusted_roots if r.not_valid_after_utc > start)
        return CertificateAuthority(key=key, certificate=root, trusted_roots=(*old, root), self_signed=True,
                                    overlap_until=start + overlap, algorithm=self.algorithm)

    def retire_old_roots(self, *, now: dt.datetime | None = None) -> CertificateAuthority:
        """This CA without the previous roots once the overlap is over (itself, unchanged, before that)."""
        if self.overlap_until is None or _now(now) < self.overlap_until:
            return self
        return CertificateAuthority(key=self.key, certificate=self.certificate, chain=self.chain,
                                    trusted_roots=(self.root,), self_signed=self.self_signed,
                                    algorithm=self.algorithm)
