"""Checking a workload certificate chain the way a peer (or the proxy receiving it from Citadel) must.

An X509-SVID is acceptable (SPIFFE ``standards/X509-SVID.md`` §5, RFC 5280 §6) when: the time now lies within
the leaf's validity window; its only URI SAN is a SPIFFE ID in the expected trust domain (and, when a peer's
service account is known, the expected ID); and a path leads from the leaf through the chain's intermediates
to one of the trusted roots, each certificate signed by the next, all valid now, with CA constraints
honoured (the path validation itself is ``cryptography``'s RFC 5280 verifier, with clientAuth EKU). Each
failure raises :class:`~meshlab.errors.CaError` whose message is the reason to log — "expired",
"not yet valid", "wrong trust domain", "not signed by a trusted root".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import verification

from meshlab.errors import CaError
from meshlab.mesh.citadel.ca import load_certificates
from meshlab.mesh.citadel.identity import parse_spiffe_id


@dataclass(frozen=True)
class VerifiedIdentity:
    spiffe_id: str
    trust_domain: str
    namespace: str
    service_account: str
    not_before: dt.datetime
    not_after: dt.datetime


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def leaf_spiffe_id(leaf: x509.Certificate) -> str:
    """The leaf's one URI SAN; ``CaError`` when it has none or several."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as err:
        raise CaError("the certificate has no subject alternative name (no SPIFFE ID)") from err
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CaError(f"the certificate must carry exactly one URI SAN, it has {len(uris)}")
    return uris[0]


def verify_chain(chain_pem: bytes | str, roots_pem: bytes | str, *, trust_domain: str | None = None,
                 expected_ids: Sequence[str] = (), now: dt.datetime | None = None) -> VerifiedIdentity:
    """Verify ``chain_pem`` (leaf first; a trailing root is tolerated) against the bundle ``roots_pem``."""
    chain = load_certificates(chain_pem, "the certificate chain")
    roots = load_certificates(roots_pem, "the trust bundle")
    if not chain:
        raise CaError("the certificate chain is empty")
    if not roots:
        raise CaError("the trust bundle is empty: nothing to verify against")
    leaf = chain[0]
    when = now if now is not None else dt.datetime.now(dt.UTC)
    if when > leaf.not_valid_after_utc:
        raise CaError(f"certificate expired at {_stamp(leaf.not_valid_after_utc)} (now {_stamp(when)})")
    if when < leaf.not_valid_before_utc:
        raise CaError(f"certificate is not yet valid: valid from {_stamp(leaf.not_valid_before_utc)} "
                      f"(now {_stamp(when)})")
    uri = leaf_spiffe_id(leaf)
    domain, namespace, account = parse_spiffe_id(uri)
    if trust_domain is not None and domain != trust_domain:
        raise CaError(f"wrong trust domain: the certificate is for {domain!r}, this mesh trusts {trust_domain!r}")
    if expected_ids and uri not in expected_ids:
        raise CaError(f"unexpected identity {uri}: expected {', '.join(expected_ids)}")
    intermediates = [c for c in chain[1:] if c not in roots]
    for cert in intermediates:
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise CaError(f"intermediate {cert.subject.rfc4514_string()} is outside its validity "
                          f"({_stamp(cert.not_valid_before_utc)} .. {_stamp(cert.not_valid_after_utc)})")
    verifier = (verification.PolicyBuilder().store(verification.Store(roots))
                .time(when.astimezone(dt.UTC).replace(tzinfo=None)).build_client_verifier())
    try:
        verifier.verify(leaf, intermediates)
    except verification.VerificationError as err:
        raise CaError(f"certificate is not signed by a trusted root: {err}") from err
    return VerifiedIdentity(spiffe_id=uri, trust_domain=domain, namespace=namespace, service_account=account,
                            not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc)
