"""Chain verification: expired, not-yet-valid, wrong-trust-domain, foreign-root and malformed certificates are
rejected with a reason — and the proxy's CertificateProvider logs that reason and refuses to use them."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshlab.errors import CaError
from meshlab.mesh.citadel import ca_pb2
from meshlab.mesh.citadel.ca import CertificateAuthority, IssuedCertificate, build_csr, certificates_pem, generate_key
from meshlab.mesh.citadel.client import CertificateProvider
from meshlab.mesh.citadel.identity import WorkloadIdentity
from meshlab.mesh.citadel.server import CertificateService, Policy, serve, server_credentials
from meshlab.mesh.citadel.verification import verify_chain

NOW = dt.datetime.now(dt.UTC)
WEB = WorkloadIdentity("cluster.local", "shop", "web")
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create_self_signed("cluster.local", now=NOW - dt.timedelta(days=1))


def issue(authority: CertificateAuthority, *, identity: WorkloadIdentity = WEB, at: dt.datetime = NOW,
          ttl: dt.timedelta = HOUR) -> IssuedCertificate:
    return authority.sign_csr(build_csr(generate_key()), identity, ttl, now=at)


def with_sans(authority: CertificateAuthority, names: list[x509.GeneralName]) -> bytes:
    """A leaf the CA would never issue (several or no URI SANs), signed by its key."""
    builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(authority.certificate.subject)
               .public_key(generate_key().public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - HOUR).not_valid_after(NOW + HOUR))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return certificates_pem([builder.sign(authority.key, hashes.SHA256())])


URI = x509.UniformResourceIdentifier


@pytest.mark.parametrize(("make", "kwargs", "reason"), [
    pytest.param(lambda a: issue(a, at=NOW - 2 * HOUR).chain_pem, {}, "certificate expired at", id="[Error] expired"),
    pytest.param(lambda a: issue(a, at=NOW + 2 * HOUR).chain_pem, {}, "not yet valid", id="[Error] not yet valid"),
    pytest.param(lambda a: issue(a, identity=WorkloadIdentity("evil.example", "shop", "web")).chain_pem,
                 {"trust_domain": "cluster.local"}, "wrong trust domain", id="[Error] wrong trust domain"),
    pytest.param(lambda a: issue(a).chain_pem, {"expected_ids": ["spiffe://cluster.local/ns/shop/sa/db"]},
                 "unexpected identity", id="[Error] another service account"),
    pytest.param(lambda a: issue(CertificateAuthority.create_self_signed("cluster.local")).chain_pem, {},
                 "not signed by a trusted root", id="[Error] another root"),
    pytest.param(lambda a: with_sans(a, [URI("spiffe://cluster.local/ns/a/sa/b"), URI("spiffe://cluster.local/ns/c/sa/d")]),
                 {}, "exactly one URI SAN", id="[Error] two URI SANs"),
    pytest.param(lambda a: with_sans(a, []), {}, "no subject alternative name", id="[Error] no SAN"),
    pytest.param(lambda a: with_sans(a, [URI("https://example.com/")]), {}, "not a SPIFFE ID", id="[Error] not SPIFFE"),
    pytest.param(lambda a: b"", {}, "chain is empty", id="[Error] empty chain"),
])
def test_unacceptable_chains_are_rejected_with_a_reason(authority: CertificateAuthority,
                                                        make: Callable[[CertificateAuthority], bytes],
                                                        kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(CaError, match=reason):
        verify_chain(make(authority), authority.roots_pem, **kwargs)


@pytest.mark.parametrize("kwargs", [
    pytest.param({}, id="any trust domain"),
    pytest.param({"trust_domain": "cluster.local"}, id="its trust domain"),
    pytest.param({"expected_ids": ["spiffe://cluster.local/ns/shop/sa/web"]}, id="the expected account"),
])
def test_a_good_chain_verifies(authority: CertificateAuthority, kwargs: dict[str, Any]) -> None:
    verified = verify_chain(issue(authority).chain_pem, authority.roots_pem, **kwargs)
    assert (verified.namespace, verified.service_account) == ("shop", "web")


def test_an_empty_bundle_trusts_nothing(authority: CertificateAuthority) -> None:
    with pytest.raises(CaError, match="trust bundle is empty"):
        verify_chain(issue(authority).chain_pem, b"")


class SkewedService(CertificateService):
    """A Citadel whose clock or trust domain is wrong: it signs the real CSR, but the result must be refused."""

    def __init__(self, authority: CertificateAuthority, *, at: dt.datetime, trust_domain: str) -> None:
        super().__init__(Policy(authority), authenticator=None)  # type: ignore[arg-type]
        self._at, self._domain = at, trust_domain

    async def create_certificate(self, request: ca_pb2.IstioCertificateRequest,
                                 context: Any) -> ca_pb2.IstioCertificateResponse:
        identity = WorkloadIdentity(self._domain, "shop", "web")
        issued = self.policy.authority.sign_csr(request.csr, identity, HOUR, now=self._at)
        return ca_pb2.IstioCertificateResponse(cert_chain=issued.cert_chain)


@pytest.mark.parametrize(("at", "domain", "reason"), [
    pytest.param(NOW - 2 * HOUR, "cluster.local", "certificate expired at", id="[Error] expired"),
    pytest.param(NOW + 2 * HOUR, "cluster.local", "not yet valid", id="[Error] not yet valid"),
    pytest.param(NOW, "evil.example", "wrong trust domain", id="[Error] wrong trust domain"),
])
def test_the_provider_logs_why_it_refuses_a_certificate(tmp_path: Path, authority: CertificateAuthority,
                                                        caplog: pytest.LogCaptureFixture, at: dt.datetime,
                                                        domain: str, reason: str) -> None:
    token = tmp_path / "token"
    token.write_text("t")

    async def main() -> None:
        service = SkewedService(authority, at=at, trust_domain=domain)
        server, port = await serve(service, credentials=server_credentials(
            authority, ["istio-citadel.istio-system.svc"], ["127.0.0.1"]))

        async def resolve() -> str:
            return f"127.0.0.1:{port}"

        try:
            certs = CertificateProvider("istio-citadel.istio-system.svc:15012", token, ca_roots_pem=authority.roots_pem,
                                        ttl=3600, resolve=resolve, trust_domain="cluster.local", max_backoff=0.2)
            with pytest.raises(CaError, match=reason):
                await certs.request()
            with pytest.raises(TimeoutError):  # start() keeps retrying: it never accepts the bad certificate
                await asyncio.wait_for(certs.start(), 1.0)
            assert certs.current() is None
        finally:
            await server.stop(grace=None)

    with caplog.at_level(logging.WARNING, logger="meshlab.citadel.client"):
        asyncio.run(main())
    assert reason in caplog.text and "retrying" in caplog.text


def test_grpc_status_codes_reach_the_log(tmp_path: Path, authority: CertificateAuthority,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: the provider says UNAVAILABLE and keeps trying."""
    token = tmp_path / "token"
    token.write_text("t")

    async def main() -> None:
        async def resolve() -> str:
            return "127.0.0.1:1"

        certs = CertificateProvider("istio-citadel.istio-system.svc:15012", token, ca_roots_pem=authority.roots_pem,
                                    ttl=None, resolve=resolve, max_backoff=0.2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(certs.start(), 1.0)

    with caplog.at_level(logging.WARNING, logger="meshlab.citadel.client"):
        asyncio.run(main())
    assert f"failed: {grpc.StatusCode.UNAVAILABLE.name}" in caplog.text
